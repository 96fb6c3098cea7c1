# gridclue developer entry points. The stack runs on 127.0.0.1 with state and logs under var/.
#   make demo   start everything, load ~5 000 demo clues, print the summary and where to look
#   make test   all tests against a real local ClickHouse (started if needed) and in-process Kafka
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CH_HTTP_PORT := $(or $(GRIDCLUE_CH_HTTP_PORT),18123)
TEST_CLICKHOUSE_URL := http://127.0.0.1:$(CH_HTTP_PORT)
# which packages and extra arguments for cargo test, e.g.
#   make test TEST_PKGS="-p gridclue-core"   make test TEST_ARGS="-- --nocapture"
TEST_PKGS ?= --workspace
TEST_ARGS ?=

.PHONY: help build up down restart status env demo test lint fmt clickhouse browser-deps clean-var chaos chaos-short

help:
	@echo "make demo       up + load the demo clues + print the summary"
	@echo "make up         build and start ClickHouse, the dev broker and the four services (idempotent)"
	@echo "make down       stop everything the stack started"
	@echo "make status     what runs where"
	@echo "make restart    restart the four services (scripts/stack.sh restart NAME for one)"
	@echo "make test       all tests (starts the local ClickHouse when needed)"
	@echo "make chaos      kill -9 ingest/enrich/sink/dev broker under load, check every 202 counted once"
	@echo "make chaos-short  the same, one kill each of ingest, enrich and sink (~1.5 min)"
	@echo "make lint       cargo fmt --check + clippy -D warnings"
	@echo "make fmt        cargo fmt"
	@echo "make clean-var  down, then delete var/ (data, logs, tokens, secret)"

build:
	$(CARGO) build --bins

up:
	scripts/stack.sh up

down:
	scripts/stack.sh down

restart:
	scripts/stack.sh restart

status:
	scripts/stack.sh status

env:
	@scripts/stack.sh env

demo:
	scripts/stack.sh demo

clickhouse:
	scripts/clickhouse.sh start

browser-deps:
	scripts/browser-deps.sh

test: clickhouse browser-deps
	GRIDCLUE_TEST_CLICKHOUSE_URL=$(TEST_CLICKHOUSE_URL) GRIDCLUE_REQUIRE_BROWSER=1 \
		$(CARGO) test $(TEST_PKGS) $(TEST_ARGS)

# Both need the stack running (make up) and gridclue-load built (cargo build -p gridclue-loadgen).
chaos:
	scripts/chaos.sh

chaos-short:
	scripts/chaos.sh --short

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-var: down
	rm -rf var
