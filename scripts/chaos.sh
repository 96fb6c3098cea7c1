#!/usr/bin/env bash
# Chaos suite: while `gridclue-load open` streams clues, kill -9 one process of the stack
# repeatedly (restarting it through scripts/stack.sh up), then check that every clue that got
# its 202 is counted exactly once in ClickHouse. Prints one row per scenario:
#   scenario, acked, counted, lost, doubled, recovery time (kill → stack ready again, worst).
#
#   scripts/chaos.sh                 every scenario, 3 kills each, 200 clues/s for 40 s
#   scripts/chaos.sh --short         ingest, enrich and sink once each, 15 s each (make chaos-short)
#   CHAOS_SCENARIOS="sink enrich" CHAOS_KILLS=2 CHAOS_RATE=300 CHAOS_DURATION=30 scripts/chaos.sh
#
# The stack must be running (make up) with the same GRIDCLUE_* environment. The dev broker
# scenario holds the broker to its promise: records acknowledged after its last journal flush
# (at most ~200 ms before the kill) may be lost; those are shown apart ("lost in promise").
# Exit status 1 when any clue is doubled, or lost outside that promise, or never settles.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR_DIR="${GRIDCLUE_VAR_DIR:-$REPO_ROOT/var}"
RUN_DIR="$VAR_DIR/run"
OUT_DIR="$VAR_DIR/chaos"
BIN_DIR="${GRIDCLUE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug}"
STACK="$REPO_ROOT/scripts/stack.sh"

SCENARIOS="${CHAOS_SCENARIOS:-ingest enrich sink devbroker}"
KILLS="${CHAOS_KILLS:-3}"
RATE="${CHAOS_RATE:-200}"
DURATION="${CHAOS_DURATION:-40}"
SETTLE_TIMEOUT="${CHAOS_SETTLE_TIMEOUT:-120}"
# How much before a broker kill an acknowledged record may be lost (the broker's promise).
BROKER_PROMISE_MS="${CHAOS_BROKER_PROMISE_MS:-200}"
if [ "${1:-}" = "--short" ]; then
    SCENARIOS="${CHAOS_SCENARIOS:-ingest enrich sink}"
    KILLS="${CHAOS_KILLS:-1}"
    DURATION="${CHAOS_DURATION:-15}"
fi

die() {
    printf 'chaos: %s\n' "$*" >&2
    exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

[ -s "$VAR_DIR/stack.env" ] || die "no $VAR_DIR/stack.env: start the stack first (make up)"
set -a
# shellcheck source=/dev/null
. "$VAR_DIR/stack.env"
set +a
[ -x "$BIN_DIR/gridclue-load" ] || die "$BIN_DIR/gridclue-load not built"
mkdir -p "$OUT_DIR"

ch() { # ch SQL [TSV on stdin] — one statement against the stack's database
    curl -fsS --max-time 60 "$GRIDCLUE_CLICKHOUSE_URL/?database=$GRIDCLUE_CLICKHOUSE_DATABASE&query=$(
        python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"
    )" --data-binary @-
}

# counts SCENARIO — loads the acked ids into a table and prints "counted doubled" for them.
counts() {
    local table="chaos_acked_$1"
    ch "DROP TABLE IF EXISTS $table" </dev/null
    ch "CREATE TABLE $table (id String, acked_ms UInt64) ENGINE = Memory" </dev/null
    ch "INSERT INTO $table FORMAT TabSeparated" <"$OUT_DIR/$1.acked"
    local counted doubled
    counted="$(ch "SELECT count() FROM $table WHERE id IN (SELECT toString(clue_id) FROM clue_events WHERE seq = 0)" </dev/null)"
    doubled="$(ch "SELECT count() FROM (SELECT clue_id, count() AS n FROM clue_events WHERE seq = 0 AND toString(clue_id) IN (SELECT id FROM $table) GROUP BY clue_id HAVING n > 1)" </dev/null)"
    echo "$counted $doubled"
}

# lost_in_promise SCENARIO — acked ids not counted whose ack came at most BROKER_PROMISE_MS
# before one of the scenario's kills.
lost_in_promise() {
    local table="chaos_acked_$1" k window=""
    while read -r k; do
        [[ "$k" =~ ^[0-9]+$ ]] || die "bad kill time '$k' in $OUT_DIR/$1.kills"
        window+="${window:+ OR }(acked_ms BETWEEN $((k - BROKER_PROMISE_MS)) AND $k)"
    done <"$OUT_DIR/$1.kills"
    ch "SELECT count() FROM $table WHERE id NOT IN (SELECT toString(clue_id) FROM clue_events WHERE seq = 0) AND (${window:-0})" </dev/null
}

run_scenario() {
    local name="$1" acked="$OUT_DIR/$1.acked" log="$OUT_DIR/$1.load.log"
    : >"$acked"
    : >"$OUT_DIR/$1.kills"
    "$BIN_DIR/gridclue-load" open --rate "$RATE" --duration "$DURATION" --mix report=9,batch=1 \
        --batch-size 10 --reporters 1 --sse 0 --probe-every-ms 0 --connections 64 \
        --acked-file "$acked" >"$log" 2>&1 &
    local load_pid=$! worst=0 i
    local gap=$((DURATION * 1000 / (KILLS + 1)))
    for ((i = 1; i <= KILLS; i++)); do
        sleep "$(awk -v ms="$gap" 'BEGIN { printf "%.1f", ms / 1000 }')"
        local pid
        pid="$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)"
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "$name is not running (pid file $RUN_DIR/$name.pid)"
        local t0
        t0="$(now_ms)"
        echo "$t0" >>"$OUT_DIR/$1.kills"
        kill -9 "$pid"
        printf '  %s: kill -9 %s (%d/%d); restarting through scripts/stack.sh up\n' "$name" "$pid" "$i" "$KILLS" >&2
        GRIDCLUE_SKIP_BUILD=1 "$STACK" up >>"$OUT_DIR/$1.stack.log" 2>&1 || die "scripts/stack.sh up failed (see $OUT_DIR/$1.stack.log)"
        local took=$(($(now_ms) - t0))
        [ "$took" -gt "$worst" ] && worst="$took"
        # the broker restart hands the services a new address: reload the environment
        set -a
        # shellcheck source=/dev/null
        . "$VAR_DIR/stack.env"
        set +a
    done
    wait "$load_pid" || true
    local total
    total="$(wc -l <"$acked")"
    # wait until every acked clue is counted (or the deadline): the pipeline drains its backlog
    local deadline=$(($(now_ms) + SETTLE_TIMEOUT * 1000)) c d
    while :; do
        read -r c d < <(counts "$name")
        [ "$c" -ge "$total" ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 1
    done
    local lost=$((total - c)) in_promise=0
    if [ "$name" = devbroker ] && [ "$lost" -gt 0 ]; then
        in_promise="$(lost_in_promise "$name")"
    fi
    printf '%-10s %8d %8d %6d %14d %8d %10.1f s\n' "$name" "$total" "$c" "$lost" "$in_promise" "$d" \
        "$(awk -v ms="$worst" 'BEGIN { print ms / 1000 }')"
    ch "DROP TABLE IF EXISTS chaos_acked_$name" </dev/null
    [ "$d" -eq 0 ] && [ "$lost" -eq "$in_promise" ] && [ "$total" -gt 0 ]
}

printf 'chaos: %s; %d kill(s) each, %s req/s for %s s (logs in %s)\n' "$SCENARIOS" "$KILLS" "$RATE" "$DURATION" "${OUT_DIR#"$REPO_ROOT"/}" >&2
printf '%-10s %8s %8s %6s %14s %8s %12s\n' scenario acked counted lost "lost in promise" doubled recovery
failed=0
t_all="$(now_ms)"
for s in $SCENARIOS; do
    run_scenario "$s" || failed=1
done
printf 'chaos: done in %d s: %s\n' $((($(now_ms) - t_all) / 1000)) "$([ "$failed" -eq 0 ] && echo 'nothing lost or doubled' || echo FAILED)" >&2
exit "$failed"
