#!/usr/bin/env bash
# Headless Chromium for the real-browser tests (ingest's reporting page): Debian's chromium and
# chromium-driver. Idempotent: does nothing when /usr/bin/chromium is already there.
# The tests drive it with playwright-core, which they install themselves with `npm ci` from the
# committed lock file (ingest/tests/browser/package-lock.json); Node.js must be on PATH.
set -euo pipefail

log() { printf '[browser-deps] %s\n' "$*" >&2; }

if [ -x /usr/bin/chromium ]; then
    log "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
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

log "installing chromium and chromium-driver (Debian packages)"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
log "installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"

if ! command -v node >/dev/null 2>&1; then
    log "warning: node is not on PATH; the browser test needs Node.js 20+"
fi
