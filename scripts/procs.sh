# Process helpers shared by clickhouse.sh and stack.sh (sourced, not run).

# A zombie (exited, not yet reaped by its new parent) counts as gone.
pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != "Z" ]
}
