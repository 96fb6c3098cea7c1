# One image with the four gridclue services (docker-compose.yml picks the binary per service).
#   docker build --build-arg GRIDCLUE_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t gridclue .
# Build stage: the Rust toolchain; librdkafka is built from source by rdkafka (gcc, make, perl).
FROM rust:1.89-bookworm AS build
WORKDIR /src
# The commit for gridclue_build_info (an image build has no .git).
ARG GRIDCLUE_GIT_COMMIT=unknown
ENV GRIDCLUE_GIT_COMMIT=${GRIDCLUE_GIT_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin gridclue-ingest --bin gridclue-enrich --bin gridclue-sink --bin gridclue-dashboard-api --bin gridclue-hotspots \
    && mkdir -p /out \
    && cp target/release/gridclue-ingest target/release/gridclue-enrich \
          target/release/gridclue-sink target/release/gridclue-dashboard-api \
          target/release/gridclue-hotspots /out/

# Runtime: a small Debian with CA certificates (TLS to Kafka/ClickHouse) and curl (health
# checks); librdkafka is linked in statically. Runs as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gridclue \
    && useradd --system --uid 10001 --gid gridclue --home-dir /opt/gridclue --shell /usr/sbin/nologin gridclue \
    && mkdir -p /var/lib/gridclue \
    && chown gridclue:gridclue /var/lib/gridclue
COPY --from=build /out/ /usr/local/bin/
COPY data /opt/gridclue/data
WORKDIR /opt/gridclue
ENV GRIDCLUE_DATA_DIR=/opt/gridclue/data \
    GRIDCLUE_TOKENS_FILE=/var/lib/gridclue/tokens.json \
    GRIDCLUE_SECRET_FILE=/var/lib/gridclue/secret.key \
    GRIDCLUE_LOG_FORMAT=json
USER 10001:10001
CMD ["gridclue-ingest"]
