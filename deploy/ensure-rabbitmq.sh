#!/usr/bin/env bash
# Make sure a local RabbitMQ is installed, running, and serving the management
# API (which provisioning needs: users and permissions cannot be made over AMQP)
# and the Prometheus endpoint.
#
# Idempotent: on a machine where everything is up it only checks and says so.
# It never restarts a running broker; plugins are enabled online.
#
# Settings (environment, all optional):
#   RABBITMQ_AMQP_HOST / RABBITMQ_AMQP_PORT   where to probe AMQP                  (default 127.0.0.1:5672)
#   RABBITMQ_STARTUP_TIMEOUT_SECONDS   how long to wait for the node      (default 120)
#   RABBITMQ_MANAGEMENT_URL            management API base URL           (default http://127.0.0.1:15672)
#   RABBITMQ_MANAGEMENT_TIMEOUT_SECONDS how long to wait for the API     (default 60)
#   RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD  credentials for the API check (default guest/guest)
set -euo pipefail

STARTUP_TIMEOUT="${RABBITMQ_STARTUP_TIMEOUT_SECONDS:-120}"
MANAGEMENT_URL="${RABBITMQ_MANAGEMENT_URL:-http://127.0.0.1:15672}"
MANAGEMENT_TIMEOUT="${RABBITMQ_MANAGEMENT_TIMEOUT_SECONDS:-60}"
ADMIN_USER="${RABBITMQ_ADMIN_USER:-guest}"
ADMIN_PASSWORD="${RABBITMQ_ADMIN_PASSWORD:-guest}"
AMQP_HOST="${RABBITMQ_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${RABBITMQ_AMQP_PORT:-5672}"
PLUGINS=(rabbitmq_management rabbitmq_prometheus)

log() { printf 'ensure-rabbitmq: %s\n' "$*"; }
die() { printf 'ensure-rabbitmq: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo when it exists.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed"
    fi
}

port_open() {
    # bash's /dev/tcp: no dependency on nc or ss.
    (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1
}

node_answers() {
    as_root timeout 30 rabbitmqctl -q status >/dev/null 2>&1
}

# Print the HTTP status of GET $1 with the admin credentials ("000" when nothing answers).
http_status() {
    local url="$1"
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            -u "${ADMIN_USER}:${ADMIN_PASSWORD}" "$url" || true
    elif command -v wget >/dev/null 2>&1; then
        wget -q -S -O /dev/null -T 5 --tries=1 --auth-no-challenge \
            --user="$ADMIN_USER" --password="$ADMIN_PASSWORD" "$url" 2>&1 \
            | awk '/^  HTTP\//{code=$2} END{print (code ? code : "000")}' || true
    else
        # A fresh Debian has neither curl nor wget, but it has the Python we run on.
        "${PYTHON:-python3}" - "$url" "$ADMIN_USER" "$ADMIN_PASSWORD" <<'PY' || echo 000
import base64, sys, urllib.error, urllib.request
url, user, password = sys.argv[1:4]
request = urllib.request.Request(url, headers={
    "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print("000")
PY
    fi
}

# 1. Installed?
if command -v rabbitmqctl >/dev/null 2>&1 && command -v rabbitmq-server >/dev/null 2>&1; then
    log "rabbitmq-server is installed ($(command -v rabbitmq-server))"
else
    log "rabbitmq-server is missing: installing it with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server
fi

# 2. Running? Never restart a node that runs.
if node_answers || port_open "$AMQP_HOST" "$AMQP_PORT"; then
    log "broker is running (rabbitmqctl status or port $AMQP_PORT answers): not touching it"
else
    log "broker is not running: starting it"
    if [[ "$(cat /proc/1/comm 2>/dev/null || true)" == "systemd" ]] && command -v systemctl >/dev/null 2>&1; then
        log "  systemctl start rabbitmq-server"
        as_root systemctl start rabbitmq-server
    elif command -v service >/dev/null 2>&1 && [[ -x /etc/init.d/rabbitmq-server ]]; then
        log "  service rabbitmq-server start"
        if ! as_root service rabbitmq-server start; then
            log "  service start failed: trying rabbitmq-server -detached"
            as_root rabbitmq-server -detached
        fi
    else
        log "  no init system: rabbitmq-server -detached"
        as_root rabbitmq-server -detached
    fi
fi

# 3. Ready? await_startup gives up at once while the Erlang node is not yet
# reachable (just after -detached), so it is retried until the deadline.
log "waiting up to ${STARTUP_TIMEOUT}s for the node to finish booting"
deadline=$((SECONDS + STARTUP_TIMEOUT))
until as_root rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        die "node did not finish booting within ${STARTUP_TIMEOUT}s (see /var/log/rabbitmq/)"
    fi
    sleep 2
done
log "node is up"

# 4. Plugins, enabled online (no restart).
missing=()
for plugin in "${PLUGINS[@]}"; do
    if as_root rabbitmq-plugins -q is_enabled "$plugin" --online >/dev/null 2>&1; then
        log "plugin $plugin is already enabled"
    else
        missing+=("$plugin")
    fi
done
if ((${#missing[@]} > 0)); then
    log "enabling plugins online: ${missing[*]}"
    as_root rabbitmq-plugins enable --online "${missing[@]}"
fi

# 5. Management API answers?
overview="${MANAGEMENT_URL%/}/api/overview"
log "waiting up to ${MANAGEMENT_TIMEOUT}s for $overview"
deadline=$((SECONDS + MANAGEMENT_TIMEOUT))
while :; do
    status="$(http_status "$overview")"
    case "$status" in
        200)
            log "management API answers (HTTP 200 as $ADMIN_USER)"
            break
            ;;
        401)
            log "management API answers, but refuses $ADMIN_USER (HTTP 401): check RABBITMQ_ADMIN_USER/PASSWORD"
            break
            ;;
    esac
    if ((SECONDS >= deadline)); then
        die "management API at $overview did not answer within ${MANAGEMENT_TIMEOUT}s (last HTTP status $status)"
    fi
    sleep 1
done

log "done: broker running, plugins ${PLUGINS[*]} enabled, management API up"
