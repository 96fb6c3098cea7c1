#!/usr/bin/env bash
# Chaos suite: while `gridclue-load open` streams clues (reports, batches, and the district
# accepting the probe clues), one fault at a time hits the stack; poison records go straight to
# the topics in every scenario. After each scenario it checks
#   - every clue that got its 202 is counted exactly once in ClickHouse (clue_events, seq 0);
#   - every aggregate equals a recomputation from the facts (`gridclue-sink check-aggregates`;
#     a gap left by an earlier scenario is reported and only its change is judged);
#   - the DLQ gained exactly the poison records, each with its reason code (refusals of
#     well-formed transitions, e.g. accepting an accepted clue, are the pipeline's answers and
#     are not counted as poison);
# and prints one row per scenario: acked, counted, lost, doubled, DLQ, aggregates, recovery.
#
# Scenarios (the fault happens CHAOS_KILLS times, evenly spread over the load):
#   ingest, enrich, sink, clickhouse, devbroker   kill -9, then restart through scripts/stack.sh up
#                            (recovery: kill → every service ready again, worst of the kills)
#   rebalance                a second enrich and a second sink join (recovery: start → ready),
#                            then leave (SIGTERM)
#   refuse                   ClickHouse refuses every insert (the default user's profile is
#                            switched to read-only in the stack's users.xml) for
#                            CHAOS_REFUSE_SECONDS (recovery: writable again → every clue acked
#                            until then is counted)
#
#   scripts/chaos.sh            every scenario, 3 faults each, 200 req/s for 40 s, refusal 60 s
#   scripts/chaos.sh --short    one fault each, 8 s of load, refusal 5 s, without the dev
#                               broker (make chaos-short on a running stack; make test runs it
#                               as make test-chaos, on a stack of its own)
#   CHAOS_SCENARIOS="sink refuse" CHAOS_KILLS=2 CHAOS_RATE=300 CHAOS_DURATION=30 scripts/chaos.sh
#
# The stack must be running (make up) with the same GRIDCLUE_* environment, and gridclue-load
# built. The dev broker scenario holds the broker to its promise (devstack/README.md): a
# kill -9 loses only records its journal had not read — acknowledged at most
# CHAOS_BROKER_PROMISE_MS (200) before it, or the larger read lag the broker logged in the 3 s
# before it; those are shown apart ("lost in promise").
# Exit status 1 when any clue is doubled, lost outside that promise, or never settles, when an
# aggregate differs from the facts, or when the DLQ differs from the poison set.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/procs.sh
. "$REPO_ROOT/scripts/procs.sh"
VAR_DIR="${GRIDCLUE_VAR_DIR:-$REPO_ROOT/var}"
RUN_DIR="$VAR_DIR/run"
OUT_DIR="$VAR_DIR/chaos"
BIN_DIR="${GRIDCLUE_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug}"
STACK="$REPO_ROOT/scripts/stack.sh"

SCENARIOS="${CHAOS_SCENARIOS:-ingest enrich sink clickhouse devbroker rebalance refuse}"
KILLS="${CHAOS_KILLS:-3}"
RATE="${CHAOS_RATE:-200}"
DURATION="${CHAOS_DURATION:-40}"
REFUSE_SECONDS="${CHAOS_REFUSE_SECONDS:-60}"
SETTLE_TIMEOUT="${CHAOS_SETTLE_TIMEOUT:-120}"
# How much before a broker kill an acknowledged record may be lost (the broker's promise), unless
# the broker logged a larger journal read lag in the LAG_LOOKBACK_MS before the kill.
BROKER_PROMISE_MS="${CHAOS_BROKER_PROMISE_MS:-200}"
LAG_LOOKBACK_MS="${CHAOS_LAG_LOOKBACK_MS:-3000}"
# Ports of the second enrich and sink (rebalance scenario).
SECOND_ENRICH_PORT="${CHAOS_SECOND_ENRICH_PORT:-$((${GRIDCLUE_ENRICH_PORT:-7403} + 10))}"
SECOND_SINK_PORT="${CHAOS_SECOND_SINK_PORT:-$((${GRIDCLUE_SINK_PORT:-7404} + 10))}"
if [ "${1:-}" = "--short" ]; then
    SCENARIOS="${CHAOS_SCENARIOS:-ingest enrich sink clickhouse rebalance refuse}"
    KILLS="${CHAOS_KILLS:-1}"
    DURATION="${CHAOS_DURATION:-8}"
    REFUSE_SECONDS="${CHAOS_REFUSE_SECONDS:-5}"
fi
# DLQ reasons that are the pipeline's answer to a well-formed command it refused (the load's
# transitions), not poison.
REFUSAL_REASONS="illegal_transition unknown_clue terminal_state forbidden too_many_pending"

die() {
    printf 'chaos: %s\n' "$*" >&2
    exit 1
}
note() { printf '  %s\n' "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

load_stack_env() {
    [ -s "$VAR_DIR/stack.env" ] || die "no $VAR_DIR/stack.env: start the stack first (make up)"
    set -a
    # shellcheck source=/dev/null
    . "$VAR_DIR/stack.env"
    set +a
}
load_stack_env
[ -x "$BIN_DIR/gridclue-load" ] || die "$BIN_DIR/gridclue-load not built"
[ -x "$BIN_DIR/gridclue-sink" ] || die "$BIN_DIR/gridclue-sink not built"
mkdir -p "$OUT_DIR"

ch() { # ch SQL [TSV on stdin] — one statement against the stack's database
    curl -fsS --max-time 60 "$GRIDCLUE_CLICKHOUSE_URL/?database=$GRIDCLUE_CLICKHOUSE_DATABASE&query=$(
        python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"
    )" --data-binary @-
}

# service_env NAME — the environment scripts/stack.sh started NAME with, one assignment a line.
service_env() {
    [ -s "$RUN_DIR/$1.env" ] || die "no $RUN_DIR/$1.env: is $1 running under scripts/stack.sh?"
    cat "$RUN_DIR/$1.env"
}

# sink_tool ARGS… — gridclue-sink's operator commands with the running sink's environment.
sink_tool() {
    local envs
    mapfile -t envs < <(service_env sink)
    env "${envs[@]}" "$BIN_DIR/gridclue-sink" "$@"
}

# dlq_positions FILE — every DLQ record as "partition offset reason source_topic
# source_partition source_offset", sorted.
dlq_positions() {
    sink_tool dlq list --json 2>>"$OUT_DIR/dlq-tool.log" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    r = e["record"].get("Ok")
    if r is None:
        print(e["partition"], e["offset"], "unreadable", "-", -1, -1)
    else:
        print(e["partition"], e["offset"], r["reason"], r["source_topic"], r["source_partition"], r["source_offset"])
' | sort >"$1"
}

# dlq_check SCENARIO — compares the DLQ records added since the scenario began (without
# refusals) with the poison records sent; prints "expected got extra missing".
dlq_check() {
    local name="$1"
    dlq_positions "$OUT_DIR/$name.dlq.after"
    python3 - "$OUT_DIR/$name.dlq.before" "$OUT_DIR/$name.dlq.after" "$OUT_DIR/$name.poison" "$REFUSAL_REASONS" "$OUT_DIR/$name.dlq.diff" <<'EOF'
import json, sys
before_f, after_f, poison_f, refusals, diff_f = sys.argv[1:]
refusals = set(refusals.split())
def rows(path):
    with open(path) as f:
        return [l.split() for l in f if l.strip()]
before = {(r[0], r[1]) for r in rows(before_f)}
got = {(r[3], r[4], r[5], r[2]) for r in rows(after_f) if (r[0], r[1]) not in before and r[2] not in refusals}
expected = set()
with open(poison_f) as f:
    for line in f:
        if line.strip():
            p = json.loads(line)
            expected.add((p["topic"], str(p["partition"]), str(p["offset"]), p["reason"]))
extra, missing = got - expected, expected - got
with open(diff_f, "w") as f:
    for r in sorted(extra):
        print("extra", *r, file=f)
    for r in sorted(missing):
        print("missing", *r, file=f)
print(len(expected), len(got), len(extra), len(missing))
EOF
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

# reported_lag_ms KILL_MS — the largest journal read lag the dev broker logged in the
# LAG_LOOKBACK_MS before KILL_MS (0 when none): it warns at most once a second with the largest
# lag since its last warning whenever that passes its flush interval.
reported_lag_ms() {
    python3 - "$VAR_DIR/log/devbroker.log" "$1" "$LAG_LOOKBACK_MS" <<'EOF_PY'
import datetime, re, sys
log, kill, lookback = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
worst = 0
for line in open(log, errors="replace"):
    m = re.match(r"(\S+)Z .*read_lag_ms=(\d+)", line)
    if not m:
        continue
    at = datetime.datetime.fromisoformat(m[1][:26]).replace(tzinfo=datetime.timezone.utc)
    at_ms = int(at.timestamp() * 1000)
    if kill - lookback <= at_ms <= kill:
        worst = max(worst, int(m[2]))
print(worst)
EOF_PY
}

# lost_in_promise SCENARIO — acked ids not counted whose ack came within the broker's promise
# before one of the scenario's kills, or between the kill and the restarted stack being ready (a
# 202 that reaches the client after the kill was acknowledged by the broker before it). The
# promise: a kill loses what the journal had not read, at most BROKER_PROMISE_MS, or the larger
# read lag the broker itself reported just before the kill. Prints "count window_ms…".
lost_in_promise() {
    local table="chaos_acked_$1" k ready lag window="" windows=""
    while read -r k ready; do
        [[ "$k" =~ ^[0-9]+$ && "$ready" =~ ^[0-9]+$ ]] || die "bad kill line '$k $ready' in $OUT_DIR/$1.kills"
        lag="$(reported_lag_ms "$k")"
        [ "$lag" -gt "$BROKER_PROMISE_MS" ] || lag="$BROKER_PROMISE_MS"
        windows+=" ${lag}ms"
        window+="${window:+ OR }(acked_ms BETWEEN $((k - lag)) AND $ready)"
    done <"$OUT_DIR/$1.kills"
    echo "$(ch "SELECT count() FROM $table WHERE id NOT IN (SELECT toString(clue_id) FROM clue_events WHERE seq = 0) AND (${window:-0})" </dev/null)$windows"
}

# aggregates_gap — how far the aggregates are from a recomputation from the facts
# (`gridclue-sink check-aggregates`): "reports cases facts off" — reports, cases and facts
# missing from clue_counts and fact_flow_hourly (negative: counted twice), and the groups off in
# every aggregate it checks (status counts, trend days, open cases too), e.g. "0 0 0 0".
aggregates_gap() {
    sink_tool check-aggregates >"$OUT_DIR/aggregates.log" 2>&1 || true
    python3 - "$OUT_DIR/aggregates.log" <<'EOF_PY'
import re, sys
text = open(sys.argv[1]).read()
c = re.search(r"reports (\d+) / (\d+) in the facts, cases (\d+) / (\d+)", text)
f = re.search(r"facts (\d+) / (\d+) in the facts", text)
if not c or not f:
    sys.exit("check-aggregates printed no counts (see " + sys.argv[1] + ")")
off = sum(int(n) for n in re.findall(r"groups off: (\d+)", text))
o = re.search(r"states missing: (\d+), states not an open clue's latest: (\d+)", text)
off += int(o[1]) + int(o[2]) if o else 0
print(int(c[2]) - int(c[1]), int(c[4]) - int(c[3]), int(f[2]) - int(f[1]), off)
EOF_PY
}

# aggregates_exact BEFORE — "yes" when the gap is what it was before the scenario (a few tries
# while the last facts land), else "NO:reports/cases/facts/groups" (the change of the gap).
aggregates_exact() {
    local before="$1" now i
    for i in 1 2 3 4 5; do
        now="$(aggregates_gap)"
        if [ "$now" = "$before" ]; then
            echo yes
            return 0
        fi
        sleep 2
    done
    python3 -c 'import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); print("NO:" + "/".join(str(int(y) - int(x)) for x, y in zip(a, b)))' "$before" "$now"
}

# restart_stack — scripts/stack.sh up (restarts what is not running), then the new environment.
restart_stack() {
    GRIDCLUE_SKIP_BUILD=1 "$STACK" up >>"$OUT_DIR/$SCENARIO.stack.log" 2>&1 ||
        die "scripts/stack.sh up failed (see $OUT_DIR/$SCENARIO.stack.log)"
    load_stack_env # a restarted broker hands the services a new address
}

# fault_kill NAME — kill -9 of NAME's process, restart; prints ms from kill to ready.
fault_kill() {
    local name="$1" pid t0
    pid="$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)"
    pid_alive "$pid" || die "$name is not running (pid file $RUN_DIR/$name.pid)"
    t0="$(now_ms)"
    kill -9 "$pid"
    note "$name: kill -9 $pid; restarting through scripts/stack.sh up"
    restart_stack
    local ready
    ready="$(now_ms)"
    echo "$t0 $ready" >>"$OUT_DIR/$SCENARIO.kills"
    echo $((ready - t0))
}

# start_second NAME PORT — a second instance of NAME with the first one's environment on PORT;
# prints its pid.
start_second() {
    local name="$1" port="$2" envs
    mapfile -t envs < <(service_env "$name" | grep -v '^GRIDCLUE_LISTEN=')
    envs+=("GRIDCLUE_LISTEN=127.0.0.1:$port")
    local pidf="$OUT_DIR/$name-2.pid"
    rm -f "$pidf"
    (
        cd "$REPO_ROOT"
        # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
        exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidf" \
            env "${envs[@]}" "$BIN_DIR/gridclue-$name" </dev/null >>"$OUT_DIR/$name-2.log" 2>&1
    ) &
    local i=0
    while [ ! -s "$pidf" ] && [ "$i" -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    [ -s "$pidf" ] || die "the second $name did not start"
    cat "$pidf"
}

wait_ready_url() { # wait_ready_url URL PID — until URL answers 200 (fails when PID dies)
    local deadline=$(($(now_ms) + 90000))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" = 200 ]; do
        pid_alive "$2" || die "the second instance (pid $2) exited; see $OUT_DIR/*-2.log"
        [ "$(now_ms)" -lt "$deadline" ] || die "$1 not ready after 90 s"
        sleep 0.2
    done
}

# fault_rebalance HOLD_S — a second enrich and sink join, stay HOLD_S, leave; prints ms from
# the start to both ready.
fault_rebalance() {
    local hold="$1" t0 enrich_pid sink_pid took
    t0="$(now_ms)"
    enrich_pid="$(start_second enrich "$SECOND_ENRICH_PORT")"
    sink_pid="$(start_second sink "$SECOND_SINK_PORT")"
    note "rebalance: a second enrich (pid $enrich_pid, :$SECOND_ENRICH_PORT) and sink (pid $sink_pid, :$SECOND_SINK_PORT) join"
    wait_ready_url "http://127.0.0.1:$SECOND_ENRICH_PORT/readyz" "$enrich_pid"
    wait_ready_url "http://127.0.0.1:$SECOND_SINK_PORT/readyz" "$sink_pid"
    took=$(($(now_ms) - t0))
    sleep "$hold"
    note "rebalance: the second enrich and sink leave (SIGTERM)"
    kill -TERM "$enrich_pid" "$sink_pid"
    while pid_alive "$enrich_pid" || pid_alive "$sink_pid"; do sleep 0.2; done
    echo "$took"
}

# ch_refuses — true when the stack's ClickHouse refuses a write for the default user (readonly).
ch_refuses() {
    local body
    body="$(curl -sS --max-time 10 "$GRIDCLUE_CLICKHOUSE_URL/?max_threads=1" --data-binary 'SELECT 1' 2>&1 || true)"
    [[ "$body" == *"Code: 164"* ]]
}

# set_ch_profile PROFILE — the default user's settings profile in the stack's users.xml
# (ClickHouse reloads the file within a few seconds). The `readonly` profile refuses every
# insert (code 164, READONLY) without touching tables or in-flight inserts: a detached and
# re-attached table (DETACH/ATTACH) would also interrupt an insert between the table and its
# materialized views, which is a server-crash fault, not a refusal.
set_ch_profile() {
    local users="$VAR_DIR/clickhouse/etc/users.xml" tmp
    [ -s "$users" ] || die "no $users: is ClickHouse the stack's own (scripts/clickhouse.sh)?"
    tmp="$(mktemp "$users.XXXXXX")"
    python3 - "$users" "$1" >"$tmp" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
users = text.index("<users>")
head, tail = text[:users], text[users:]
tail = re.sub(r"(<default>.*?<profile>)[^<]*(</profile>)", lambda m: m.group(1) + sys.argv[2] + m.group(2), tail, count=1, flags=re.S)
sys.stdout.write(head + tail)
PY
    chmod --reference="$users" "$tmp"
    mv -f "$tmp" "$users"
}

# fault_refuse SECONDS — ClickHouse refuses every insert for SECONDS (from the moment it does);
# prints ms from the end of the refusal until every clue acked before it is counted.
fault_refuse() {
    local secs="$1" t0 acked_then deadline
    set_ch_profile readonly
    deadline=$(($(now_ms) + 30000))
    until ch_refuses; do
        [ "$(now_ms)" -lt "$deadline" ] || { set_ch_profile default; die "ClickHouse did not become read-only within 30 s"; }
        sleep 0.2
    done
    note "refuse: ClickHouse refuses inserts (default user read-only) for $secs s"
    sleep "$secs"
    set_ch_profile default
    deadline=$(($(now_ms) + 30000))
    while ch_refuses; do
        [ "$(now_ms)" -lt "$deadline" ] || die "ClickHouse still read-only 30 s after the profile was restored"
        sleep 0.2
    done
    t0="$(now_ms)"
    note "refuse: ClickHouse accepts inserts again"
    acked_then="$(wc -l <"$OUT_DIR/$SCENARIO.acked")"
    head -n "$acked_then" "$OUT_DIR/$SCENARIO.acked" >"$OUT_DIR/${SCENARIO}_then.acked"
    local c d
    deadline=$((t0 + SETTLE_TIMEOUT * 1000))
    while :; do
        read -r c d < <(counts "${SCENARIO}_then")
        [ "$c" -ge "$acked_then" ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 0.5
    done
    ch "DROP TABLE IF EXISTS chaos_acked_${SCENARIO}_then" </dev/null
    echo $(($(now_ms) - t0))
}

# inject_poison — one round of every poison kind; appends what was sent to SCENARIO.poison.
inject_poison() {
    "$BIN_DIR/gridclue-load" poison --rounds 1 >>"$OUT_DIR/$SCENARIO.poison" 2>>"$OUT_DIR/$SCENARIO.load.log" ||
        die "gridclue-load poison failed (see $OUT_DIR/$SCENARIO.load.log)"
}

run_scenario() {
    SCENARIO="$1"
    local name="$1" acked="$OUT_DIR/$1.acked" log="$OUT_DIR/$1.load.log"
    : >"$acked"
    : >"$OUT_DIR/$name.kills"
    : >"$OUT_DIR/$name.poison"
    : >"$OUT_DIR/$name.stack.log"
    dlq_positions "$OUT_DIR/$name.dlq.before"
    local gap_before
    gap_before="$(aggregates_gap)"
    [ "$gap_before" = "0 0 0 0" ] || note "$name: the aggregates were already off before it (missing reports/cases/facts, groups off: $gap_before); judging the change"
    local duration="$DURATION" faults="$KILLS"
    if [ "$name" = refuse ]; then
        faults=1
        [ "$duration" -ge $((REFUSE_SECONDS + 8)) ] || duration=$((REFUSE_SECONDS + 8))
    fi
    # Probes every 500 ms: the district accepts them (transitions) once they are visible.
    "$BIN_DIR/gridclue-load" open --rate "$RATE" --duration "$duration" \
        --mix report=8,batch=1,transition=1 --batch-size 10 --reporters 1 --sse 0 \
        --probe-every-ms 500 --connections 64 --acked-file "$acked" >"$log" 2>&1 &
    local load_pid=$! worst=0 i took
    local gap=$((duration * 1000 / (faults + 1)))
    sleep 1
    inject_poison
    for ((i = 1; i <= faults; i++)); do
        sleep "$(awk -v ms="$gap" 'BEGIN { printf "%.1f", ms / 1000 }')"
        case "$name" in
        rebalance) took="$(fault_rebalance "$(awk -v ms="$gap" 'BEGIN { printf "%.1f", ms / 2000 }')")" ;;
        refuse) took="$(fault_refuse "$REFUSE_SECONDS")" ;;
        ingest | enrich | sink | clickhouse | devbroker) took="$(fault_kill "$name")" ;;
        *) die "unknown scenario $name" ;;
        esac
        load_stack_env
        [ "$took" -gt "$worst" ] && worst="$took"
    done
    inject_poison
    wait "$load_pid" || note "gridclue-load exited non-zero (see $log)"
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
        local windows
        read -r in_promise windows < <(lost_in_promise "$name")
        note "$name: the broker's promise at the kill(s): ${windows:-none}"
    fi
    # the DLQ may still be receiving the last poison records
    local expected got extra missing
    deadline=$(($(now_ms) + 30000))
    while :; do
        read -r expected got extra missing < <(dlq_check "$name")
        [ "$missing" -eq 0 ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 1
    done
    local exact
    exact="$(aggregates_exact "$gap_before")"
    printf '%-10s %7d %7d %5d %8d %7d %5d/%-3d %5d %9s %9.1f s\n' "$name" "$total" "$c" "$lost" "$in_promise" "$d" \
        "$got" "$expected" "$((extra + missing))" "$exact" "$(awk -v ms="$worst" 'BEGIN { print ms / 1000 }')"
    [ "$((extra + missing))" -eq 0 ] || note "$name: the DLQ differs from the poison set: $OUT_DIR/$name.dlq.diff"
    [ "$exact" = yes ] || note "$name: the aggregates differ from the facts: $OUT_DIR/aggregates.log"
    ch "DROP TABLE IF EXISTS chaos_acked_$name" </dev/null
    [ "$d" -eq 0 ] && [ "$lost" -eq "$in_promise" ] && [ "$total" -gt 0 ] &&
        [ "$((extra + missing))" -eq 0 ] && [ "$exact" = yes ]
}

printf 'chaos: %s; %d fault(s) each, %s req/s for %s s (logs in %s)\n' "$SCENARIOS" "$KILLS" "$RATE" "$DURATION" "${OUT_DIR#"$REPO_ROOT"/}" >&2
printf '%-10s %7s %7s %5s %8s %7s %9s %5s %9s %11s\n' scenario acked counted lost "in prom." doubled "dlq/pois" wrong "aggr.=" recovery
failed=0
t_all="$(now_ms)"
for s in $SCENARIOS; do
    run_scenario "$s" || failed=1
done
printf 'chaos: done in %d s: %s\n' $((($(now_ms) - t_all) / 1000)) "$([ "$failed" -eq 0 ] && echo 'nothing lost, doubled or misfiled; aggregates exact' || echo FAILED)" >&2
exit "$failed"
