#!/usr/bin/env bash
# Headless Chromium for the real-browser tests (ingest's reporting page, dashboard-api's
# dashboard): Debian's chromium and chromium-driver, and a CJK font (fonts-wqy-microhei) so that
# the dashboard's screenshots show Chinese text rather than empty boxes. Idempotent: installs
# only what is missing.
# The tests drive it with playwright-core, which they install themselves with `npm ci` from the
# committed lock file (ingest/tests/browser/package-lock.json); Node.js must be on PATH.
set -euo pipefail

log() { printf '[browser-deps] %s\n' "$*" >&2; }

cjk_font_present() { [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || fc-list :lang=zh 2>/dev/null | grep -q .; }

if [ -x /usr/bin/chromium ] && cjk_font_present; then
    log "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version); CJK font present"
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

log "installing chromium, chromium-driver and fonts-wqy-microhei (Debian packages)"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null
log "installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"

if ! command -v node >/dev/null 2>&1; then
    log "warning: node is not on PATH; the browser test needs Node.js 20+"
fi
