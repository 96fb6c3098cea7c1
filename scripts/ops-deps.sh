#!/usr/bin/env bash
# Tools of the operations checks (`make test-ops`): promtool (Debian's `prometheus` package) for
# the alert rules and their unit tests, and docker-compose (Debian's `docker-compose` package)
# to validate docker-compose.yml without a Docker engine. Idempotent: installs only what is
# missing.
set -euo pipefail

log() { printf '[ops-deps] %s\n' "$*" >&2; }

pkgs=()
command -v promtool >/dev/null 2>&1 || pkgs+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || pkgs+=(docker-compose)
if [ "${#pkgs[@]}" -eq 0 ]; then
    log "present: $(promtool --version 2>&1 | head -n1); $(docker-compose version --short 2>/dev/null || echo docker-compose)"
    exit 0
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        exit 1
    fi
}

log "installing ${pkgs[*]} (Debian packages)"
as_root apt-get update -qq
# The prometheus package's maintainer scripts would start its daemon where an init system runs:
# only its promtool is wanted here, so services are kept from starting during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
fi
status=0
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null || status=$?
[ "$created_policy" -eq 0 ] || as_root rm -f "$policy"
[ "$status" -eq 0 ] || exit "$status"
log "installed: $(promtool --version 2>&1 | head -n1); docker-compose $(docker-compose version --short 2>/dev/null)"
