#!/usr/bin/env bash
# The local gridclue stack: ClickHouse, the dev broker and the five services, all on 127.0.0.1,
# state and logs under var/.
#
#   scripts/stack.sh up        build, start whatever is not running, wait until ready (idempotent)
#   scripts/stack.sh down      stop everything the stack started (by its pid files)
#   scripts/stack.sh restart [NAME…]   restart the named services (default: all five)
#   scripts/stack.sh status    what runs, where, and whether it is ready
#   scripts/stack.sh env       print var/stack.env (eval "$(scripts/stack.sh env)")
#   scripts/stack.sh demo      up + load the demo clues + print the summary and where to look
#
# Environment (all optional):
#   GRIDCLUE_INGEST_PORT 7401, GRIDCLUE_DASHBOARD_PORT 7402, GRIDCLUE_ENRICH_PORT 7403,
#   GRIDCLUE_SINK_PORT 7404, GRIDCLUE_HOTSPOTS_PORT 7405; GRIDCLUE_CH_HTTP_PORT etc. (see scripts/clickhouse.sh);
#   GRIDCLUE_CLICKHOUSE_DATABASE (gridclue); GRIDCLUE_DEVBROKER_PARTITIONS (6);
#   GRIDCLUE_DEVBROKER_START_TIMEOUT seconds until the dev broker has replayed its journal and
#   published its address (120);
#   GRIDCLUE_READY_TIMEOUT seconds per service (90); GRIDCLUE_STOP_TIMEOUT seconds (15);
#   GRIDCLUE_SKIP_BUILD=1 to use the binaries as they are; GRIDCLUE_BIN_DIR ($CARGO_TARGET_DIR/debug, else target/debug);
#   GRIDCLUE_DEMO_COUNT (5000), GRIDCLUE_DEMO_RATE (500), GRIDCLUE_DEMO_SEED (2026),
#   GRIDCLUE_DEMO_HISTORY_COUNT (1500); RUST_LOG (info).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/procs.sh
. "$REPO_ROOT/scripts/procs.sh"
VAR_DIR="${GRIDCLUE_VAR_DIR:-$REPO_ROOT/var}"
export GRIDCLUE_VAR_DIR="$VAR_DIR" # scripts/clickhouse.sh uses the same directory
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"
BIN_DIR="${GRIDCLUE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug}"
CLICKHOUSE_SH="$REPO_ROOT/scripts/clickhouse.sh"

CH_URL="http://127.0.0.1:${GRIDCLUE_CH_HTTP_PORT:-18123}"
CH_DATABASE="${GRIDCLUE_CLICKHOUSE_DATABASE:-gridclue}"
DATA_DIR="$REPO_ROOT/data"
TOKENS_FILE="$VAR_DIR/tokens.json"
SECRET_FILE="$VAR_DIR/secret.key"
DEMO_TOKENS_FILE="$VAR_DIR/demo-tokens.env"
STACK_ENV_FILE="$VAR_DIR/stack.env"
ADDR_FILE="$RUN_DIR/kafka.addr"
# The dev broker's journal: its topics' records and the groups' committed offsets, replayed at
# every start so that offsets (and the sink's stored offsets in ClickHouse) stay valid.
JOURNAL_DIR="$VAR_DIR/devbroker"
BROKER_START_TIMEOUT="${GRIDCLUE_DEVBROKER_START_TIMEOUT:-120}"
PARTITIONS="${GRIDCLUE_DEVBROKER_PARTITIONS:-6}"
READY_TIMEOUT="${GRIDCLUE_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${GRIDCLUE_STOP_TIMEOUT:-15}"

# Services in start order; `down` stops them in reverse (the front door first).
SERVICES=(sink enrich hotspots dashboard-api ingest)

service_port() {
    case "$1" in
    ingest) echo "${GRIDCLUE_INGEST_PORT:-7401}" ;;
    dashboard-api) echo "${GRIDCLUE_DASHBOARD_PORT:-7402}" ;;
    enrich) echo "${GRIDCLUE_ENRICH_PORT:-7403}" ;;
    sink) echo "${GRIDCLUE_SINK_PORT:-7404}" ;;
    hotspots) echo "${GRIDCLUE_HOTSPOTS_PORT:-7405}" ;;
    *) return 1 ;;
    esac
}
service_url() { echo "http://127.0.0.1:$(service_port "$1")"; }
binary_of() { echo "$BIN_DIR/gridclue-$1"; }

# The demo load, in one place: adjust here when the loader's flags change. A past month of
# history is imported (back-dated, exactly once), the riders post today's clues, then the staff
# work them through the closed loop (street offices, departments, the district; staff tokens are
# issued once through the admin API and kept in var/).
run_demo_load() {
    step "importing a past month of history (${GRIDCLUE_DEMO_HISTORY_COUNT:-1500} clues over 30 days)"
    (cd "$REPO_ROOT" && "$BIN_DIR/gridclue-load" history \
        --ingest-url "$GRIDCLUE_INGEST_URL" \
        --district-token "$GRIDCLUE_DEMO_DISTRICT_TOKEN" \
        --data-dir "$DATA_DIR" \
        --count "${GRIDCLUE_DEMO_HISTORY_COUNT:-1500}" \
        --days 30 \
        --seed "${GRIDCLUE_DEMO_SEED:-2026}") || return
    step "riders post today's clues (${GRIDCLUE_DEMO_COUNT:-5000} at ${GRIDCLUE_DEMO_RATE:-500}/s)"
    (cd "$REPO_ROOT" && "$BIN_DIR/gridclue-load" \
        --ingest-url "$GRIDCLUE_INGEST_URL" \
        --token "$GRIDCLUE_DEMO_REPORTER_TOKEN" \
        --count "${GRIDCLUE_DEMO_COUNT:-5000}" \
        --rate "${GRIDCLUE_DEMO_RATE:-500}" \
        --seed "${GRIDCLUE_DEMO_SEED:-2026}") || return
    step "the staff work the clues (street offices, departments, the district)"
    (cd "$REPO_ROOT" && "$BIN_DIR/gridclue-load" staff \
        --ingest-url "$GRIDCLUE_INGEST_URL" \
        --dashboard-url "$GRIDCLUE_DASHBOARD_URL" \
        --district-token "$GRIDCLUE_DEMO_DISTRICT_TOKEN" \
        --reporter-token "$GRIDCLUE_DEMO_REPORTER_TOKEN" \
        --tokens-file "$VAR_DIR/demo-staff-tokens.json" \
        --seed "${GRIDCLUE_DEMO_SEED:-2026}")
}

# --- output -------------------------------------------------------------------------------------

step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { # ms since $1 as seconds with one decimal
    local d=$(($(now_ms) - $1))
    printf '%d.%d s' $((d / 1000)) $((d % 1000 / 100))
}
rel() { echo "${1#"$REPO_ROOT"/}"; }

show_log_tail() {
    local f="$1"
    if [ -s "$f" ]; then
        printf -- '--- last lines of %s (this run) ---\n' "$(rel "$f")" >&2
        # from the last "=== … starting" header this script wrote, at most 40 lines
        awk '/^=== / { n = NR } { line[NR] = $0 } END { s = (n ? n : 1); if (NR - s >= 40) s = NR - 39; for (i = s; i <= NR; i++) print line[i] }' "$f" >&2
        printf -- '---\n' >&2
    else
        printf '(%s is empty)\n' "$(rel "$f")" >&2
    fi
}

# --- processes ----------------------------------------------------------------------------------

pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }
fingerprint_file() { echo "$RUN_DIR/$1.env"; }

# Prints the pid of process NAME when its pid file names a live process running our binary for
# NAME (so a recycled pid is never mistaken for ours): argv[0], or argv[1] for a program run
# through an interpreter, is gridclue-NAME. Prints nothing otherwise.
proc_pid() {
    local name="$1" f pid arg
    f="$(pid_file "$name")"
    [ -s "$f" ] || return 0
    pid="$(cat "$f" 2>/dev/null || true)"
    pid_alive "$pid" || return 0
    while IFS= read -r arg; do
        if [ "$(basename -- "${arg:-x}")" = "gridclue-$name" ]; then
            echo "$pid"
            return 0
        fi
    done < <(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n2 || true)
}

# start_proc NAME ENV_ARRAY_NAME CMD… — starts CMD in its own session with the given environment
# assignments, stdout+stderr appended to var/log/NAME.log, pid in var/run/NAME.pid.
start_proc() {
    local name="$1" envs_name="$2"
    shift 2
    local -n envs_ref="$envs_name"
    local pidf logf
    pidf="$(pid_file "$name")"
    logf="$(log_file "$name")"
    [ -x "$1" ] || die "$1 not found: build it first (cargo build --bins)"
    rm -f "$pidf"
    printf '\n=== %s starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$logf"
    (
        exec 9>&- # the stack lock stays with this script
        cd "$REPO_ROOT"
        # own session: a Ctrl-C in the terminal that ran `make up` does not reach it. The wrapper
        # writes its own pid, then becomes the program (same pid).
        # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
        exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidf" \
            env "${envs_ref[@]}" "$@" </dev/null >>"$logf" 2>&1
    ) &
    local i=0
    while [ ! -s "$pidf" ] && [ "$i" -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    [ -s "$pidf" ] || die "$name did not start (see $(rel "$logf"))"
    printf '%s\n' "${envs_ref[@]}" >"$(fingerprint_file "$name")"
}

# stop_proc NAME — SIGTERM to the process group, wait, SIGKILL after STOP_TIMEOUT.
stop_proc() {
    local name="$1" pid
    pid="$(proc_pid "$name")"
    if [ -z "$pid" ]; then
        rm -f "$(pid_file "$name")" "$(fingerprint_file "$name")"
        return 0
    fi
    local t0
    t0="$(now_ms)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local limit=$((STOP_TIMEOUT * 10)) i=0
    while pid_alive "$pid" && [ "$i" -lt "$limit" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if pid_alive "$pid"; then
        info "$name: no exit ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.1; done
    fi
    # anything left in its process group (it is a session leader)
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$(pid_file "$name")" "$(fingerprint_file "$name")"
    info "$name: stopped (pid $pid, $(elapsed "$t0"))"
}

http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# wait_ready NAME — until GET /readyz answers 200; fails with the log tail when the process dies
# or READY_TIMEOUT passes.
wait_ready() {
    local name="$1" url pid t0 code=""
    url="$(service_url "$name")/readyz"
    pid="$(cat "$(pid_file "$name")" 2>/dev/null || true)"
    t0="$(now_ms)"
    local deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
    while :; do
        code="$(http_status "$url")"
        if [ "$code" = "200" ]; then
            info "$name: ready at $(service_url "$name") ($(elapsed "$t0"))"
            return 0
        fi
        if ! pid_alive "$pid"; then
            show_log_tail "$(log_file "$name")"
            rm -f "$(pid_file "$name")" "$(fingerprint_file "$name")"
            die "$name exited before it was ready (log: $(rel "$(log_file "$name")"))"
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            show_log_tail "$(log_file "$name")"
            die "$name (pid $pid) not ready after ${READY_TIMEOUT}s: $url answered '${code:-nothing}' (log: $(rel "$(log_file "$name")"); 'make down' stops it)"
        fi
        sleep 0.2
    done
}

# --- pieces of `up` -----------------------------------------------------------------------------

build_binaries() {
    if [ "${GRIDCLUE_SKIP_BUILD:-0}" = "1" ]; then
        step "build skipped (GRIDCLUE_SKIP_BUILD=1)"
    else
        step "building binaries (cargo build --bins)"
        local t0
        t0="$(now_ms)"
        # The commit the services report in gridclue_build_info (read by the binaries only).
        (cd "$REPO_ROOT" &&
            GRIDCLUE_GIT_COMMIT="${GRIDCLUE_GIT_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null)}" \
                cargo build --bins) || die "cargo build failed"
        info "built in $(elapsed "$t0")"
    fi
    local name missing=()
    for name in devbroker "${SERVICES[@]}"; do
        [ -x "$(binary_of "$name")" ] || missing+=("$(rel "$(binary_of "$name")")")
    done
    [ "${#missing[@]}" -eq 0 ] || die "missing binaries: ${missing[*]}"
}

ensure_secret() {
    if [ ! -s "$SECRET_FILE" ]; then
        local tmp
        tmp="$(mktemp "$VAR_DIR/.secret.key.XXXXXX")"
        chmod 600 "$tmp"
        head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$tmp"
        mv -f "$tmp" "$SECRET_FILE"
        info "created $(rel "$SECRET_FILE") (32 random bytes, hex, mode 600)"
    fi
    chmod 600 "$SECRET_FILE"
}

# Environment every service (and the token CLI) gets. Sets the array COMMON_ENV.
common_env() {
    COMMON_ENV=(
        "GRIDCLUE_KAFKA_BROKERS=$1"
        # the dev broker (librdkafka's mock) answers a fetch only when fetch.wait.max.ms is up
        'GRIDCLUE_KAFKA_EXTRA={"fetch.wait.max.ms":"50"}'
        "GRIDCLUE_CLICKHOUSE_URL=$CH_URL"
        "GRIDCLUE_CLICKHOUSE_DATABASE=$CH_DATABASE"
        # dashboard-api reads as the read-only user scripts/clickhouse.sh configures
        "GRIDCLUE_CLICKHOUSE_READ_USER=gridclue_reader"
        "GRIDCLUE_CLICKHOUSE_READ_PASSWORD_FILE=$("$CLICKHOUSE_SH" reader-password)"
        "GRIDCLUE_DATA_DIR=$DATA_DIR"
        "GRIDCLUE_TOKENS_FILE=$TOKENS_FILE"
        "GRIDCLUE_SECRET_FILE=$SECRET_FILE"
        "RUST_LOG=${RUST_LOG:-info}"
        "NO_COLOR=1" # logs go to files
    )
}

ensure_clickhouse() {
    step "clickhouse"
    local t0
    t0="$(now_ms)"
    if ! "$CLICKHOUSE_SH" start 9>&- 2>&1 | sed 's/^/    /'; then
        die "ClickHouse did not start (logs: $(rel "$LOG_DIR")/clickhouse*.log)"
    fi
    info "clickhouse: $CH_URL ($(elapsed "$t0"))"
}

# Starts the dev broker unless it runs and has published its address. Sets BROKERS.
ensure_broker() {
    step "dev broker"
    local pid
    pid="$(proc_pid devbroker)"
    if [ -n "$pid" ] && [ -s "$ADDR_FILE" ]; then
        BROKERS="$(head -n1 "$ADDR_FILE")"
        info "devbroker: running (pid $pid) at $BROKERS"
        return 0
    fi
    if [ -n "$pid" ]; then
        info "devbroker: running without an address file; restarting it"
        stop_proc devbroker
    elif [ -f "$(pid_file devbroker)" ]; then
        info "devbroker: found dead; restarting it from its journal (records acknowledged after its last journal flush may be lost; services using it restart too)"
    fi
    rm -f "$ADDR_FILE"
    local t0 envs=("RUST_LOG=${RUST_LOG:-info}")
    t0="$(now_ms)"
    start_proc devbroker envs "$(binary_of devbroker)" \
        --addr-file "$ADDR_FILE" --partitions "$PARTITIONS" --journal-dir "$JOURNAL_DIR"
    pid="$(cat "$(pid_file devbroker)")"
    local deadline=$(($(now_ms) + BROKER_START_TIMEOUT * 1000))
    while [ ! -s "$ADDR_FILE" ]; do
        if ! pid_alive "$pid"; then
            show_log_tail "$(log_file devbroker)"
            rm -f "$(pid_file devbroker)" "$(fingerprint_file devbroker)"
            die "devbroker exited during startup"
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            show_log_tail "$(log_file devbroker)"
            die "devbroker (pid $pid) wrote no address file within ${BROKER_START_TIMEOUT} s"
        fi
        sleep 0.05
    done
    BROKERS="$(head -n1 "$ADDR_FILE")"
    info "devbroker: started (pid $pid) at $BROKERS ($(elapsed "$t0")), journal $(rel "$JOURNAL_DIR")"
    # what it restored, from its own log line
    local restored
    restored="$(grep 'journal restored' "$(log_file devbroker)" | tail -n1 |
        sed -n 's/.*records=\([0-9]*\).*committed_offsets=\([0-9]*\).*elapsed_ms=\([0-9]*\).*/\1 records, \2 committed offsets in \3 ms/p' || true)"
    [ -z "$restored" ] || info "devbroker: restored $restored"
}

# Issues the demo tokens once — a reporter, the district command centre, one street office
# (GRIDCLUE_DEMO_STREET_CODE, default the map's first street) and one department
# (GRIDCLUE_DEMO_DEPARTMENT_CODE, default greening_city_appearance); later runs reuse
# var/demo-tokens.env and issue only what it lacks (or a street/department that changed).
# Sets REPORTER_TOKEN, DISTRICT_TOKEN, STREET_TOKEN, STREET_CODE, DEPARTMENT_TOKEN and
# DEPARTMENT_CODE.
ensure_tokens() {
    step "demo tokens"
    local want_street want_department issued="" first_street=""
    # one feature per line: the first line's street code
    first_street="$(grep -m1 -o '"street_code": *"[0-9]\{9\}"' "$DATA_DIR/district/grids.geojson" || true)"
    want_street="${GRIDCLUE_DEMO_STREET_CODE:-${first_street//[^0-9]/}}"
    want_department="${GRIDCLUE_DEMO_DEPARTMENT_CODE:-greening_city_appearance}"
    [ -n "$want_street" ] || die "no street code found in $(rel "$DATA_DIR")/district/grids.geojson"
    REPORTER_TOKEN="" DISTRICT_TOKEN="" STREET_TOKEN="" STREET_CODE="" DEPARTMENT_TOKEN="" DEPARTMENT_CODE=""
    if [ -s "$DEMO_TOKENS_FILE" ] && [ -s "$TOKENS_FILE" ]; then
        REPORTER_TOKEN="$(demo_value REPORTER_TOKEN)"
        DISTRICT_TOKEN="$(demo_value DISTRICT_TOKEN)"
        STREET_TOKEN="$(demo_value STREET_TOKEN)"
        STREET_CODE="$(demo_value STREET_CODE)"
        DEPARTMENT_TOKEN="$(demo_value DEPARTMENT_TOKEN)"
        DEPARTMENT_CODE="$(demo_value DEPARTMENT_CODE)"
    fi
    [ "$STREET_CODE" = "$want_street" ] || STREET_TOKEN=""
    [ "$DEPARTMENT_CODE" = "$want_department" ] || DEPARTMENT_TOKEN=""
    if [ -n "$REPORTER_TOKEN" ] && [ -n "$DISTRICT_TOKEN" ] && [ -n "$STREET_TOKEN" ] && [ -n "$DEPARTMENT_TOKEN" ]; then
        info "reusing tokens from $(rel "$DEMO_TOKENS_FILE")"
        return 0
    fi
    common_env "${BROKERS:-}"
    if [ -z "$REPORTER_TOKEN" ]; then
        REPORTER_TOKEN="$(issue_token --kind reporter --group food_delivery --name demo-rider)"
        issued+=" reporter"
    fi
    if [ -z "$DISTRICT_TOKEN" ]; then
        DISTRICT_TOKEN="$(issue_token --kind district --name demo-district-command-centre)"
        issued+=" district"
    fi
    if [ -z "$STREET_TOKEN" ]; then
        STREET_TOKEN="$(issue_token --kind street --scope "$want_street" --name "demo-street-$want_street")"
        issued+=" street:$want_street"
    fi
    if [ -z "$DEPARTMENT_TOKEN" ]; then
        DEPARTMENT_TOKEN="$(issue_token --kind department --scope "$want_department" --name "demo-$want_department")"
        issued+=" department:$want_department"
    fi
    STREET_CODE="$want_street"
    DEPARTMENT_CODE="$want_department"
    local tmp
    tmp="$(mktemp "$VAR_DIR/.demo-tokens.env.XXXXXX")"
    chmod 600 "$tmp"
    {
        echo "# Demo tokens issued by scripts/stack.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); reused by later runs."
        echo "GRIDCLUE_DEMO_REPORTER_TOKEN=$REPORTER_TOKEN"
        echo "GRIDCLUE_DEMO_DISTRICT_TOKEN=$DISTRICT_TOKEN"
        echo "GRIDCLUE_DEMO_STREET_TOKEN=$STREET_TOKEN"
        echo "GRIDCLUE_DEMO_STREET_CODE=$STREET_CODE"
        echo "GRIDCLUE_DEMO_DEPARTMENT_TOKEN=$DEPARTMENT_TOKEN"
        echo "GRIDCLUE_DEMO_DEPARTMENT_CODE=$DEPARTMENT_CODE"
    } >"$tmp"
    mv -f "$tmp" "$DEMO_TOKENS_FILE"
    info "issued demo tokens:$issued ($(rel "$DEMO_TOKENS_FILE"))"
    # services that read the tokens file load it at start: restart the running ones
    local name
    for name in ingest dashboard-api; do
        if [ -n "$(proc_pid "$name")" ]; then
            info "$name: restarting to load the new tokens"
            stop_proc "$name"
        fi
    done
}

# demo_value NAME — the value of GRIDCLUE_DEMO_NAME in var/demo-tokens.env.
demo_value() {
    sed -n "s/^GRIDCLUE_DEMO_$1=//p" "$DEMO_TOKENS_FILE"
}

# issue_token ARGS… — prints the token gridclue-ingest printed (its only stdout line).
issue_token() {
    local out rc=0 errf="$LOG_DIR/tokens.log"
    printf '\n=== %s tokens issue %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$errf"
    out="$(cd "$REPO_ROOT" && env "${COMMON_ENV[@]}" "$(binary_of ingest)" tokens issue "$@" \
        </dev/null 2>>"$errf")" || rc=$?
    if [ "$rc" -ne 0 ]; then
        show_log_tail "$errf"
        die "gridclue-ingest tokens issue $* failed (exit $rc)"
    fi
    out="$(printf '%s' "$out" | tr -d '\r')"
    if [ -z "$out" ] || [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || [[ "$out" =~ [[:space:]] ]]; then
        die "gridclue-ingest tokens issue $* printed no single token on stdout"
    fi
    printf '%s' "$out"
}

# ensure_service NAME — leaves a running service alone when it was started with the same
# environment; (re)starts it when it is not running or its environment changed (e.g. the dev
# broker was restarted and has a new address). Prints whether it started it.
ensure_service() {
    local name="$1" pid port
    port="$(service_port "$name")"
    common_env "$BROKERS"
    local envs=("${COMMON_ENV[@]}" "GRIDCLUE_LISTEN=127.0.0.1:$port")
    if [ "$name" = ingest ]; then
        # The demo load posts hundreds of clues a second through one token from one address:
        # the local stack turns ingest's per-token and per-address limits off (0) unless set.
        envs+=("GRIDCLUE_RATE_LIMIT_TOKEN_PER_SEC=${GRIDCLUE_RATE_LIMIT_TOKEN_PER_SEC:-0}"
            "GRIDCLUE_RATE_LIMIT_IP_PER_SEC=${GRIDCLUE_RATE_LIMIT_IP_PER_SEC:-0}"
            # photos in the stack's var dir; the page's "my reports" tab through dashboard-api
            "GRIDCLUE_PHOTOS_URL=${GRIDCLUE_PHOTOS_URL:-$VAR_DIR/photos}"
            "GRIDCLUE_DASHBOARD_URL=$(service_url dashboard-api)")
    fi
    pid="$(proc_pid "$name")"
    if [ -n "$pid" ]; then
        if [ "$(printf '%s\n' "${envs[@]}")" = "$(cat "$(fingerprint_file "$name")" 2>/dev/null)" ]; then
            info "$name: running (pid $pid)"
            return 0
        fi
        info "$name: was started with another environment (e.g. an old broker address); restarting"
        stop_proc "$name"
    elif [ -f "$(pid_file "$name")" ]; then
        info "$name: found not running; restarting"
    fi
    local code
    code="$(http_status "$(service_url "$name")/healthz")"
    if [ "$code" != "000" ] && [ -n "$code" ]; then
        die "port $port already answers HTTP (not a process of this stack); stop it or set its GRIDCLUE_*_PORT"
    fi
    start_proc "$name" envs "$(binary_of "$name")"
    info "$name: started (pid $(cat "$(pid_file "$name")"))"
}

write_stack_env() {
    local tmp
    tmp="$(mktemp "$VAR_DIR/.stack.env.XXXXXX")"
    chmod 600 "$tmp"
    {
        echo "# Written by scripts/stack.sh up on $(date -u +%Y-%m-%dT%H:%M:%SZ). Source it: . var/stack.env"
        echo "GRIDCLUE_INGEST_URL=$(service_url ingest)"
        echo "GRIDCLUE_DASHBOARD_URL=$(service_url dashboard-api)"
        echo "GRIDCLUE_ENRICH_URL=$(service_url enrich)"
        echo "GRIDCLUE_SINK_URL=$(service_url sink)"
        echo "GRIDCLUE_HOTSPOTS_URL=$(service_url hotspots)"
        echo "GRIDCLUE_KAFKA_BROKERS=$BROKERS"
        echo "GRIDCLUE_CLICKHOUSE_URL=$CH_URL"
        echo "GRIDCLUE_CLICKHOUSE_DATABASE=$CH_DATABASE"
        echo "GRIDCLUE_DATA_DIR=$DATA_DIR"
        echo "GRIDCLUE_TOKENS_FILE=$TOKENS_FILE"
        echo "GRIDCLUE_SECRET_FILE=$SECRET_FILE"
        echo "GRIDCLUE_DEMO_REPORTER_TOKEN=$REPORTER_TOKEN"
        echo "GRIDCLUE_DEMO_DISTRICT_TOKEN=$DISTRICT_TOKEN"
        echo "GRIDCLUE_DEMO_STREET_TOKEN=$STREET_TOKEN"
        echo "GRIDCLUE_DEMO_STREET_CODE=$STREET_CODE"
        echo "GRIDCLUE_DEMO_DEPARTMENT_TOKEN=$DEPARTMENT_TOKEN"
        echo "GRIDCLUE_DEMO_DEPARTMENT_CODE=$DEPARTMENT_CODE"
    } >"$tmp"
    mv -f "$tmp" "$STACK_ENV_FILE"
}

print_table() {
    printf '\n%-14s %-8s %-28s %s\n' SERVICE PID URL LOG
    local name pid
    for name in ingest dashboard-api enrich hotspots sink; do
        pid="$(proc_pid "$name")"
        printf '%-14s %-8s %-28s %s\n' "$name" "${pid:--}" "$(service_url "$name")" "$(rel "$(log_file "$name")")"
    done
    printf '%-14s %-8s %-28s %s\n' devbroker "$(proc_pid devbroker)" "kafka://${BROKERS%%,*}" "$(rel "$(log_file devbroker)")"
    printf '%-14s %-8s %-28s %s\n' clickhouse "$(cat "$RUN_DIR/clickhouse.pid" 2>/dev/null || echo -)" "$CH_URL" "$(rel "$LOG_DIR")/clickhouse.log"
    printf '\nenvironment: %s   (. %s)\n' "$(rel "$STACK_ENV_FILE")" "$(rel "$STACK_ENV_FILE")"
}

lock_stack() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    exec 9>"$RUN_DIR/stack.lock"
    if ! flock -n 9; then
        info "another scripts/stack.sh is running; waiting for it"
        flock 9
    fi
}

# --- commands -----------------------------------------------------------------------------------

cmd_up() {
    local t_all
    t_all="$(now_ms)"
    lock_stack
    build_binaries
    ensure_secret
    ensure_clickhouse
    ensure_broker
    ensure_tokens

    step "services"
    # consumers first (both pay the group rebalance in parallel), then the readers and the door
    local name
    for name in sink enrich hotspots; do ensure_service "$name"; done
    for name in sink enrich hotspots; do wait_ready "$name"; done
    for name in dashboard-api ingest; do ensure_service "$name"; done
    for name in dashboard-api ingest; do wait_ready "$name"; done

    write_stack_env
    print_table
    step "stack up in $(elapsed "$t_all")"
}

cmd_down() {
    lock_stack
    step "stopping the stack"
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_proc "${SERVICES[$i]}"
    done
    stop_proc devbroker
    rm -f "$ADDR_FILE"
    "$CLICKHOUSE_SH" stop 9>&- 2>&1 | sed 's/^/    /'
    rm -f "$STACK_ENV_FILE"
    step "stack down"
}

cmd_restart() {
    local names=("$@")
    [ "${#names[@]}" -gt 0 ] || names=("${SERVICES[@]}")
    lock_stack
    local name
    for name in "${names[@]}"; do
        service_port "$name" >/dev/null || die "unknown service '$name' (one of: ${SERVICES[*]})"
        stop_proc "$name"
    done
    flock -u 9
    cmd_up
}

cmd_status() {
    local name pid state any_down=0
    printf '%-14s %-8s %-10s %s\n' SERVICE PID STATE URL
    for name in "${SERVICES[@]}"; do
        pid="$(proc_pid "$name")"
        if [ -z "$pid" ]; then
            state=stopped
            any_down=1
        elif [ "$(http_status "$(service_url "$name")/readyz")" = "200" ]; then
            state=ready
        else
            state=not-ready
            any_down=1
        fi
        printf '%-14s %-8s %-10s %s\n' "$name" "${pid:--}" "$state" "$(service_url "$name")"
    done
    pid="$(proc_pid devbroker)"
    if [ -n "$pid" ] && [ -s "$ADDR_FILE" ]; then
        printf '%-14s %-8s %-10s %s\n' devbroker "$pid" running "$(head -n1 "$ADDR_FILE")"
    else
        printf '%-14s %-8s %-10s %s\n' devbroker - stopped -
        any_down=1
    fi
    if "$CLICKHOUSE_SH" status >/dev/null 2>&1; then
        printf '%-14s %-8s %-10s %s\n' clickhouse "$(cat "$RUN_DIR/clickhouse.pid" 2>/dev/null)" ready "$CH_URL"
    else
        printf '%-14s %-8s %-10s %s\n' clickhouse - stopped "$CH_URL"
        any_down=1
    fi
    return "$any_down"
}

cmd_env() {
    [ -s "$STACK_ENV_FILE" ] || die "$(rel "$STACK_ENV_FILE") does not exist: run 'make up'"
    grep -v '^#' "$STACK_ENV_FILE" | sed 's/^/export /'
}

# The governance indicators of the demo's month by street, and the reporters' leaderboard.
demo_indicators_and_leaderboard() {
    local to from auth="Authorization: Bearer $GRIDCLUE_DEMO_DISTRICT_TOKEN" ind board
    # China dates: the cohort is the cases accepted in the 31 days up to and including today.
    to="$(TZ=Asia/Shanghai date -d tomorrow +%F)"
    from="$(TZ=Asia/Shanghai date -d '30 days ago' +%F)"
    step "indicators $from … $to by street ($GRIDCLUE_DASHBOARD_URL/v1/indicators)"
    ind="$(curl -fsS --max-time 30 -H "$auth" \
        "$GRIDCLUE_DASHBOARD_URL/v1/indicators?from=$from&to=$to&by=street" 2>/dev/null || true)"
    board="$(curl -fsS --max-time 30 -H "$auth" \
        "$GRIDCLUE_DASHBOARD_URL/v1/leaderboard?period=month" 2>/dev/null || true)"
    if [ -z "$ind" ] || [ -z "$board" ]; then
        echo "    (no answer from /v1/indicators or /v1/leaderboard)" >&2
        return 0
    fi
    python3 - "$ind" "$board" <<'PY' || printf '%s\n%s\n' "$ind" "$board"
import json, sys, unicodedata

def pad(text, width):
    text = str(text)
    w = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - w)

def pct(x):
    return "    -" if x is None else "%5.1f" % (100 * x)

ind, board = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("    " + pad("street", 22) + "accepted  due closed  结案率 按期结案率 返工率 延期率  score")
for r in ind.get("rows", []) + [dict(ind.get("total", {}), name="total")]:
    score = r.get("score")
    print("    " + pad(r.get("name") or r.get("key", ""), 22)
          + "%8s %4s %6s   %s   %s   %s  %s  %s" % (
              r.get("accepted"), r.get("due"), r.get("closed"),
              pct(r.get("closure_rate")), pct(r.get("on_time_rate")),
              pct(r.get("rework_rate")), pct(r.get("postpone_rate")),
              "    -" if score is None else "%5.1f" % score))
print("    leaderboard (%s): points earned" % board.get("period"))
for r in board.get("rows", [])[:10]:
    print("      %2s. %s %s %6s" % (r.get("rank"), pad(r.get("name", ""), 20), pad(r.get("group") or "", 16), r.get("points")))
PY
}

cmd_demo() {
    cmd_up
    flock -u 9 2>/dev/null || true
    set -a
    # shellcheck source=/dev/null
    . "$STACK_ENV_FILE"
    set +a
    [ -x "$BIN_DIR/gridclue-load" ] || die "$(rel "$BIN_DIR/gridclue-load") not built"
    run_demo_load || die "the demo loader failed"

    step "summary ($GRIDCLUE_DASHBOARD_URL/v1/summary)"
    # Let the last clues reach ClickHouse: poll until the total stops changing (max ~10 s).
    local body="" prev="" i
    for i in $(seq 1 20); do
        body="$(curl -fsS --max-time 5 -H "Authorization: Bearer $GRIDCLUE_DEMO_DISTRICT_TOKEN" \
            "$GRIDCLUE_DASHBOARD_URL/v1/summary" 2>/dev/null || true)"
        if [ -n "$body" ] && [ "$body" = "$prev" ]; then break; fi
        prev="$body"
        sleep 0.5
    done
    [ -n "$body" ] || die "no answer from $GRIDCLUE_DASHBOARD_URL/v1/summary"
    if ! command -v python3 >/dev/null 2>&1 || ! python3 - "$body" <<'PY'; then
import json, sys, unicodedata

def pad(text, width):  # pads by display width (CJK characters take two columns)
    text = str(text)
    w = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - w)

s = json.loads(sys.argv[1])
total, cases = s.get("total"), s.get("cases")
print("    total reports: %s   cases: %s   (duplicates and rejections are reports, not cases)" % (total, cases))
print("    outside the district: %s" % s.get("outside"))
print(pad("    by street:", 38) + "%7s %7s" % ("reports", "cases"))
for r in s.get("by_street", []):
    print("      " + pad(r.get("street_code", ""), 12) + pad(r.get("street_name", ""), 20) + "%7s %7s" % (r.get("count"), r.get("cases")))
print("    by category:")
for r in s.get("by_category", []):
    print("      " + pad(r.get("category", ""), 22) + pad(r.get("name", ""), 26) + "%7s" % r.get("count"))
PY
        printf '%s\n' "$body"
    fi

    demo_indicators_and_leaderboard

    # A service that is up but not ready (e.g. a Kafka log reset held by the sink or enrich) is
    # said out loud: its numbers above are not complete.
    local name notready=0 why
    for name in sink enrich hotspots; do
        why="$(curl -sS --max-time 5 "$(service_url "$name")/readyz" 2>/dev/null || true)"
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(service_url "$name")/readyz")" != 200 ]; then
            printf 'warning: %s is not ready; the numbers above are incomplete:\n%s\n' "$name" "$why" >&2
            notready=1
        fi
    done

    cat <<EOF

Where to look:
  dashboard        $GRIDCLUE_DASHBOARD_URL/dashboard   (wall screen: $GRIDCLUE_DASHBOARD_URL/dashboard?wall=1)
                   sign in with the district token  $GRIDCLUE_DEMO_DISTRICT_TOKEN
                   or street $GRIDCLUE_DEMO_STREET_CODE's token  $GRIDCLUE_DEMO_STREET_TOKEN
  reporting page   $GRIDCLUE_INGEST_URL/report?token=\$GRIDCLUE_DEMO_REPORTER_TOKEN (token from var/stack.env)
  open311          $GRIDCLUE_INGEST_URL/open311/v2/services.json
  summary (JSON)   curl -H "Authorization: Bearer \$GRIDCLUE_DEMO_DISTRICT_TOKEN" $GRIDCLUE_DASHBOARD_URL/v1/summary
  hotspot alerts   curl -H "Authorization: Bearer \$GRIDCLUE_DEMO_DISTRICT_TOKEN" $GRIDCLUE_DASHBOARD_URL/v1/alerts
  categories       $GRIDCLUE_INGEST_URL/v1/categories
  metrics          $GRIDCLUE_INGEST_URL/metrics  $GRIDCLUE_ENRICH_URL/metrics  $GRIDCLUE_HOTSPOTS_URL/metrics  $GRIDCLUE_SINK_URL/metrics  $GRIDCLUE_DASHBOARD_URL/metrics
  ClickHouse       scripts/clickhouse.sh client --database $GRIDCLUE_CLICKHOUSE_DATABASE
  logs             $(rel "$LOG_DIR")/
  environment      . $(rel "$STACK_ENV_FILE")
  stop             make down
EOF
    [ "$notready" -eq 0 ] || die "not every service is ready (see the warnings above and the README's rebase commands)"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
restart)
    shift
    cmd_restart "$@"
    ;;
status) cmd_status ;;
env) cmd_env ;;
demo) cmd_demo ;;
*)
    echo "usage: $0 {up|down|restart [service…]|status|env|demo}" >&2
    exit 2
    ;;
esac
