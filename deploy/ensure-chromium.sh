#!/usr/bin/env bash
# Make sure the browser tests (tests/browser) can drive a browser: Debian's
# chromium, and the system libraries of Playwright's own driver.
#
# Debian packages installed when missing (checked with dpkg-query first, so a
# machine that has them all costs no apt-get at all):
#   chromium     the browser, /usr/bin/chromium. Playwright drives it; it never
#                downloads a browser of its own (`playwright install` is never run).
#   libatomic1   libatomic.so.1, which Playwright's bundled Node
#                (.venv/.../playwright/driver/node) is linked against. A minimal
#                Debian 12 lacks it; nothing else the tests install brings it.
# The driver's other libraries (libstdc++.so.6, libgcc_s.so.1, libc.so.6, libm,
# libdl, libpthread) are in every Debian 12, even debootstrap's minbase. After
# installing, the script starts the driver (`node --version`) and, if it still
# cannot start, names what `ldd` finds missing.
#
# Idempotent. If something cannot be installed (no root, no package, no
# network), it warns and returns 0: the browser tests then skip and say why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHROMIUM="${ROGATORY_CHROMIUM:-/usr/bin/chromium}"
VENV="${ROGATORY_VENV:-$ROOT/.venv}"

log() { printf 'ensure-chromium: %s\n' "$*"; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1; fi
}

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]; }

apt_install() {
    # The package lists a machine already has are tried first (quick, and enough offline); an update only
    # when they are missing or stale.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" && return 0
    log "apt-get install failed: updating the package lists and trying again"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# 1. The packages, one apt-get each: one that cannot be had must not keep the other out.
if [[ -x "$CHROMIUM" ]]; then
    log "$CHROMIUM is installed ($("$CHROMIUM" --version 2>/dev/null || echo "version unknown"))"
else
    log "installing chromium with apt-get (for the browser tests)"
    if apt_install chromium; then
        log "$("$CHROMIUM" --version 2>/dev/null || echo "chromium installed")"
    else
        log "WARNING: could not install chromium: the browser tests will be skipped"
    fi
fi
if installed libatomic1; then
    log "libatomic1 is installed"
else
    log "installing libatomic1 with apt-get (for Playwright's driver)"
    if apt_install libatomic1; then
        log "libatomic1 installed"
    else
        log "WARNING: could not install libatomic1: Playwright's driver may not start"
    fi
fi

# 2. Does Playwright's driver start? (Only once the virtual environment has Playwright.)
shopt -s nullglob
drivers=("$VENV"/lib/python3*/site-packages/playwright/driver/node)
shopt -u nullglob
if ((${#drivers[@]} == 0)); then
    log "no Playwright driver in $VENV yet: not checked"
elif version="$("${drivers[0]}" --version 2>/dev/null)"; then
    log "Playwright's driver starts (its Node is $version)"
else
    missing="$(ldd "${drivers[0]}" 2>/dev/null | awk '/not found/ {print $1}' | paste -sd ' ' || true)"
    log "WARNING: Playwright's driver ${drivers[0]} cannot start (missing: ${missing:-unknown}):" \
        "the browser tests will be skipped"
fi
