#!/usr/bin/env bash
# Local ClickHouse for gridclue: installed if missing, run as a plain background process with the
# project's own config dir, data and logs under var/, listening on 127.0.0.1 only.
#
#   scripts/clickhouse.sh install   install the server + client if missing (Debian packages)
#   scripts/clickhouse.sh start     write config, start in the background, wait for /ping (idempotent)
#   scripts/clickhouse.sh stop      SIGTERM, wait, SIGKILL after a timeout; remove the pid file
#   scripts/clickhouse.sh status    exit 0 when running and answering /ping
#   scripts/clickhouse.sh url       print the HTTP URL
#   scripts/clickhouse.sh reader-password  print the path of the read-only user's password file
#   scripts/clickhouse.sh client …  run clickhouse-client against it (extra args passed through)
#
# Environment (all optional):
#   GRIDCLUE_CH_HTTP_PORT (18123)  GRIDCLUE_CH_TCP_PORT (19000)  GRIDCLUE_CH_INTERSERVER_PORT (19009)
#   GRIDCLUE_CH_START_TIMEOUT seconds to wait for /ping (60)
#   GRIDCLUE_CH_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (20)
#   GRIDCLUE_VAR_DIR          state directory (<repo>/var)
#
# Users: `default` (no password, 127.0.0.1 only: the services' writing user in development) and
# `gridclue_reader`, the read-only user of dashboard-api (profile readonly=2: settings may be set,
# nothing written; queries cut off after 10 s), whose password is generated on the first start
# into $GRIDCLUE_VAR_DIR/clickhouse-reader.password (mode 600; `scripts/clickhouse.sh
# reader-password` prints its path). Both may read every database, the tests' too.
#
# When an official `clickhouse` binary is on PATH it is preferred (`clickhouse server …`);
# otherwise Debian's clickhouse-server (18.16) is used.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/procs.sh
. "$REPO_ROOT/scripts/procs.sh"
VAR_DIR="${GRIDCLUE_VAR_DIR:-$REPO_ROOT/var}"
CH_HTTP_PORT="${GRIDCLUE_CH_HTTP_PORT:-18123}"
CH_TCP_PORT="${GRIDCLUE_CH_TCP_PORT:-19000}"
CH_INTERSERVER_PORT="${GRIDCLUE_CH_INTERSERVER_PORT:-19009}"
CH_START_TIMEOUT="${GRIDCLUE_CH_START_TIMEOUT:-60}"
CH_STOP_TIMEOUT="${GRIDCLUE_CH_STOP_TIMEOUT:-20}"

CH_HOME="$VAR_DIR/clickhouse"
CH_CONF_DIR="$CH_HOME/etc"
CH_CONFIG="$CH_CONF_DIR/config.xml"
CH_USERS="$CH_CONF_DIR/users.xml"
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"
PID_FILE="$RUN_DIR/clickhouse.pid"
READER_USER="gridclue_reader"
READER_PASSWORD_FILE="$VAR_DIR/clickhouse-reader.password"
STDOUT_LOG="$LOG_DIR/clickhouse.stdout.log"
SERVER_LOG="$LOG_DIR/clickhouse.log"
ERROR_LOG="$LOG_DIR/clickhouse.err.log"
CH_URL="http://127.0.0.1:$CH_HTTP_PORT"

log() { printf '[clickhouse] %s\n' "$*" >&2; }
die() {
    printf '[clickhouse] error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (no sudo available)"
    fi
}

# Prints the server command (one word per line) for the binary we will use.
server_cmd() {
    if command -v clickhouse >/dev/null 2>&1; then
        printf '%s\n%s\n' "$(command -v clickhouse)" server
    elif command -v clickhouse-server >/dev/null 2>&1; then
        command -v clickhouse-server
    elif [ -x /usr/sbin/clickhouse-server ]; then
        echo /usr/sbin/clickhouse-server
    else
        return 1
    fi
}

client_cmd() {
    if command -v clickhouse >/dev/null 2>&1; then
        printf '%s\n%s\n' "$(command -v clickhouse)" client
    elif command -v clickhouse-client >/dev/null 2>&1; then
        command -v clickhouse-client
    else
        return 1
    fi
}

# Major version of the installed ClickHouse (from the client, which prints its version on every
# release; Debian's 18.16 server binary has no --version flag).
server_major_version() {
    local cmd=() out
    if command -v clickhouse >/dev/null 2>&1; then
        cmd=(clickhouse client --version)
    elif command -v clickhouse-client >/dev/null 2>&1; then
        cmd=(clickhouse-client --version)
    elif command -v dpkg-query >/dev/null 2>&1; then
        out="$(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || true)"
        echo "${out%%.*}"
        return
    fi
    out="$("${cmd[@]}" 2>/dev/null || true)"
    out="$(printf '%s' "$out" | sed -n 's/.*version \([0-9][0-9]*\)\..*/\1/p' | head -n1)"
    echo "${out:-0}"
}

cmd_install() {
    if server_cmd >/dev/null 2>&1 && client_cmd >/dev/null 2>&1; then
        log "already installed: $(server_cmd | tr '\n' ' ')"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "ClickHouse is not installed and apt-get is not available; install clickhouse-server and clickhouse-client (or put an official 'clickhouse' binary on PATH)"
    log "installing clickhouse-server clickhouse-client (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # --no-install-recommends keeps it lean; the packages' postinst does not start a daemon
    # without systemd, and we never use the system service anyway.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        clickhouse-server clickhouse-client >/dev/null
    server_cmd >/dev/null 2>&1 || die "clickhouse-server still not found after apt-get install"
    log "installed: $(server_cmd | tr '\n' ' ')"
}

# --- config -------------------------------------------------------------------------------------

# Creates the read-only user's password file on first use (32 random bytes, hex).
ensure_reader_password() {
    if [ ! -s "$READER_PASSWORD_FILE" ]; then
        local tmp
        tmp="$(mktemp "$VAR_DIR/.clickhouse-reader.password.XXXXXX")"
        chmod 600 "$tmp"
        head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$tmp"
        mv -f "$tmp" "$READER_PASSWORD_FILE"
        log "created $READER_PASSWORD_FILE (the password of $READER_USER)"
    fi
    chmod 600 "$READER_PASSWORD_FILE"
}

write_config() {
    mkdir -p "$CH_CONF_DIR" "$CH_HOME/data" "$CH_HOME/tmp" "$CH_HOME/user_files" \
        "$CH_HOME/format_schemas" "$RUN_DIR" "$LOG_DIR"
    ensure_reader_password
    local reader_sha256
    reader_sha256="$(head -n1 "$READER_PASSWORD_FILE" | tr -d '\n' | sha256sum | cut -d' ' -f1)"
    local major lc_setting=""
    major="$(server_major_version)"
    if [ "${major:-0}" -lt 19 ]; then
        # 18.x needs this to create LowCardinality columns. Current servers dropped the setting
        # and reject it, so it is only written for the old release.
        lc_setting="            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>"
    fi

    local tmp
    tmp="$(mktemp "$CH_CONF_DIR/.config.xml.XXXXXX")"
    cat >"$tmp" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/clickhouse.sh on every start; edits are overwritten. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$SERVER_LOG</log>
        <errorlog>$ERROR_LOG</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <interserver_http_port>$CH_INTERSERVER_PORT</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>

    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>

    <path>$CH_HOME/data/</path>
    <tmp_path>$CH_HOME/tmp/</tmp_path>
    <user_files_path>$CH_HOME/user_files/</user_files_path>
    <format_schema_path>$CH_HOME/format_schemas/</format_schema_path>
    <users_config>$CH_USERS</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <umask>027</umask>

    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
</yandex>
EOF
    mv -f "$tmp" "$CH_CONFIG"

    tmp="$(mktemp "$CH_CONF_DIR/.users.xml.XXXXXX")"
    cat >"$tmp" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/clickhouse.sh on every start; edits are overwritten. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
$lc_setting
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
        <$READER_USER>
            <readonly>2</readonly>
            <max_execution_time>10</max_execution_time>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
        </$READER_USER>
    </profiles>

    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <$READER_USER>
            <password_sha256_hex>$reader_sha256</password_sha256_hex>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>$READER_USER</profile>
            <quota>default</quota>
        </$READER_USER>
    </users>

    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
    mv -f "$tmp" "$CH_USERS"
}

# --- process handling ---------------------------------------------------------------------------


# True when pid $1 is a ClickHouse server running with our config file.
is_our_server() {
    local pid="$1"
    pid_alive "$pid" || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CH_CONFIG"
}

# Pid of a running server started with our config (from the pid file, else by scanning /proc for a
# process whose command line names our config file, which re-adopts a server whose pid file was
# lost). Prints nothing when none runs.
running_pid() {
    local pid=""
    if [ -f "$PID_FILE" ]; then
        pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        if is_our_server "$pid"; then
            echo "$pid"
            return 0
        fi
    fi
    local d
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        if [ -r "$d/cmdline" ] && tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "--config-file=$CH_CONFIG"; then
            mkdir -p "$RUN_DIR"
            echo "$pid" >"$PID_FILE"
            echo "$pid"
            return 0
        fi
    done
    return 0
}

# Serialises start/stop between concurrent callers (e.g. `make test` and `make up` at once).
lock_ch() {
    mkdir -p "$RUN_DIR"
    exec 8>"$RUN_DIR/clickhouse.lock"
    flock 8
}

ping_ok() {
    local body
    body="$(curl -fsS --max-time 2 "$CH_URL/ping" 2>/dev/null || true)"
    [ "$body" = "Ok." ]
}

show_log_tail() {
    local f
    for f in "$STDOUT_LOG" "$ERROR_LOG"; do
        if [ -s "$f" ]; then
            printf -- '--- last lines of %s ---\n' "$f" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

cmd_start() {
    local pid start_ns now_ns deadline_ns
    lock_ch
    start_ns="$(date +%s%N)"
    pid="$(running_pid)"
    if [ -n "$pid" ]; then
        if ping_ok; then
            log "already running (pid $pid) at $CH_URL"
            return 0
        fi
        log "running (pid $pid) but not answering yet; waiting"
    else
        if ping_ok; then
            die "something else already answers on $CH_URL (not started by this script); stop it or set GRIDCLUE_CH_HTTP_PORT"
        fi
        server_cmd >/dev/null 2>&1 || cmd_install
        write_config
        rm -f "$PID_FILE"
        local cmd=()
        mapfile -t cmd < <(server_cmd)
        log "starting ${cmd[*]} (http $CH_HTTP_PORT, tcp $CH_TCP_PORT), data in $CH_HOME"
        {
            printf '\n=== %s starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${cmd[*]}"
        } >>"$STDOUT_LOG"
        # The server is its own session leader so a Ctrl-C in the terminal that started it does
        # not reach it; the wrapper writes its own pid and then becomes the server.
        (
            exec 8>&- # the lock stays with this script
            cd "$CH_HOME"
            # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
            exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
                "${cmd[@]}" --config-file="$CH_CONFIG" </dev/null >>"$STDOUT_LOG" 2>&1
        ) &
        local waited=0
        while [ ! -s "$PID_FILE" ] && [ "$waited" -lt 50 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        [ -n "$pid" ] || die "server process did not start"
    fi

    deadline_ns=$((start_ns + CH_START_TIMEOUT * 1000000000))
    while :; do
        if ping_ok; then
            now_ns="$(date +%s%N)"
            log "ready at $CH_URL (pid $pid, $(((now_ns - start_ns) / 1000000)) ms)"
            return 0
        fi
        if ! pid_alive "$pid"; then
            rm -f "$PID_FILE"
            show_log_tail
            die "server exited during startup (logs: $STDOUT_LOG, $ERROR_LOG)"
        fi
        now_ns="$(date +%s%N)"
        if [ "$now_ns" -ge "$deadline_ns" ]; then
            show_log_tail
            die "no 'Ok.' from $CH_URL/ping after ${CH_START_TIMEOUT}s (pid $pid still running; logs in $LOG_DIR)"
        fi
        sleep 0.1
    done
}

cmd_stop() {
    local pid
    lock_ch
    pid="$(running_pid)"
    if [ -z "$pid" ]; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0 limit=$((CH_STOP_TIMEOUT * 10))
    while pid_alive "$pid" && [ "$waited" -lt "$limit" ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if pid_alive "$pid"; then
        log "still running after ${CH_STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [ -n "$pid" ] && ping_ok; then
        echo "clickhouse: running (pid $pid) $CH_URL"
        return 0
    elif [ -n "$pid" ]; then
        echo "clickhouse: process $pid running but $CH_URL/ping does not answer"
        return 1
    fi
    echo "clickhouse: stopped"
    return 3
}

cmd_client() {
    local cmd=()
    mapfile -t cmd < <(client_cmd) || die "no ClickHouse client installed"
    exec "${cmd[@]}" --host 127.0.0.1 --port "$CH_TCP_PORT" "$@"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
restart)
    cmd_stop
    cmd_start
    ;;
status) cmd_status ;;
url) echo "$CH_URL" ;;
reader-password) echo "$READER_PASSWORD_FILE" ;;
client)
    shift
    cmd_client "$@"
    ;;
*)
    echo "usage: $0 {install|start|stop|restart|status|url|reader-password|client [args…]}" >&2
    exit 2
    ;;
esac
