#!/usr/bin/env bash
# Make sure a local PostgreSQL is installed, running, and has the role the tests use.
#
# The gateway keeps its records in SQLite by default and in PostgreSQL when a
# deployment outgrows one machine; the test suite runs the gateway's store on
# both. Idempotent: where PostgreSQL already runs it only checks and says so,
# and it never restarts a running cluster.
#
# Settings (environment, all optional):
#   ROGATORY_TEST_POSTGRES_ROLE / _PASSWORD   the role the tests log in as (default rogatory/rogatory)
#   POSTGRES_STARTUP_TIMEOUT_SECONDS          how long to wait for the server (default 60)
set -euo pipefail

ROLE="${ROGATORY_TEST_POSTGRES_ROLE:-rogatory}"
PASSWORD="${ROGATORY_TEST_POSTGRES_PASSWORD:-rogatory}"
TIMEOUT="${POSTGRES_STARTUP_TIMEOUT_SECONDS:-60}"

log() { printf 'ensure-postgresql: %s\n' "$*"; }
die() { printf 'ensure-postgresql: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run '$*' and sudo is not installed"; fi
}

as_postgres() {
    if [[ "$(id -un)" == "postgres" ]]; then "$@"
    elif command -v runuser >/dev/null 2>&1 && [[ "$(id -u)" -eq 0 ]]; then runuser -u postgres -- "$@"
    else as_root su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/5432") >/dev/null 2>&1; }

# 1. Installed?
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "PostgreSQL is missing: installing it with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
else
    log "PostgreSQL is installed"
fi

# 2. Running? Never restart a cluster that runs.
if port_open; then
    log "PostgreSQL answers on 127.0.0.1:5432: not touching it"
else
    log "PostgreSQL is not running: starting it"
    if [[ "$(ps -p 1 -o comm= 2>/dev/null || true)" == "systemd" ]] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl start postgresql
    else
        version="$(ls /etc/postgresql | sort -V | tail -n 1)"
        [[ -n "$version" ]] || die "no cluster configuration under /etc/postgresql"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
            || as_root pg_ctlcluster "$version" main start
    fi
    for _ in $(seq "$TIMEOUT"); do
        port_open && break
        sleep 1
    done
    port_open || die "PostgreSQL did not start within ${TIMEOUT}s"
    log "PostgreSQL started"
fi

# 3. The tests' role: password login over TCP (Debian's default pg_hba.conf asks for one there).
as_postgres psql -v ON_ERROR_STOP=1 -q -d postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ROLE}') THEN
        CREATE ROLE "${ROLE}" LOGIN CREATEDB PASSWORD '${PASSWORD}';
    ELSE
        ALTER ROLE "${ROLE}" LOGIN CREATEDB PASSWORD '${PASSWORD}';
    END IF;
END
\$\$;
SQL
log "role ${ROLE} can log in and create databases"
