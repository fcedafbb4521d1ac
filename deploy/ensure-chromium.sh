#!/usr/bin/env bash
# Make sure Debian's chromium is installed, for the browser tests (tests/browser).
#
# Playwright drives /usr/bin/chromium; it never downloads a browser of its own
# (`playwright install` is never run). Idempotent: where chromium is already
# installed it only says so. If it cannot be installed (no root, no package),
# it warns and returns 0: the browser tests then skip and say why.
set -euo pipefail

CHROMIUM="${ROGATORY_CHROMIUM:-/usr/bin/chromium}"

log() { printf 'ensure-chromium: %s\n' "$*"; }

if [[ -x "$CHROMIUM" ]]; then
    log "$("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM") is installed"
    exit 0
fi

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1; fi
}

log "installing chromium with apt-get (for the browser tests)"
if as_root apt-get update -qq \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; then
    log "$("$CHROMIUM" --version 2>/dev/null || echo installed)"
else
    log "WARNING: could not install chromium: the browser tests will be skipped"
fi
