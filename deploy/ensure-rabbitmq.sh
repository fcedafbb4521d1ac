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
#   ROGATORY_SYSTEM_MANAGEMENT_URL     management API base URL           (default http://127.0.0.1:15672)
#   RABBITMQ_MANAGEMENT_TIMEOUT_SECONDS how long to wait for the API     (default 60)
#   RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASSWORD  credentials for the API check (default guest/guest)
#   RABBITMQ_CONFIG_FILE               the broker's config file             (default /etc/rabbitmq/rabbitmq.conf)
#   ROGATORY_BROKER_TLS_DIR            CA and broker certificate            (default /etc/rabbitmq/tls)
#   ROGATORY_BROKER_TLS_PORT           the AMQPS listener on 127.0.0.1      (default 5671)
#   ROGATORY_PYTHON                    a Python with this project and `cryptography` (default .venv/bin/python)
#   ROGATORY_BROKER_NOFILE             the broker's open-file limit from its next start (default 65536)
#
# TLS: deploy/provision/tls.py makes a CA and a certificate for `localhost` (once; again
# only when missing or near expiry) and writes the AMQPS listener into the
# config file between marker lines, keeping every other line. A broker that
# is already running gets the listener started online (no restart, port 5672
# untouched); one started by this script reads it from the config.
set -euo pipefail

STARTUP_TIMEOUT="${RABBITMQ_STARTUP_TIMEOUT_SECONDS:-120}"
MANAGEMENT_URL="${ROGATORY_SYSTEM_MANAGEMENT_URL:-http://127.0.0.1:15672}"
MANAGEMENT_TIMEOUT="${RABBITMQ_MANAGEMENT_TIMEOUT_SECONDS:-60}"
ADMIN_USER="${RABBITMQ_ADMIN_USER:-guest}"
ADMIN_PASSWORD="${RABBITMQ_ADMIN_PASSWORD:-guest}"
AMQP_HOST="${RABBITMQ_AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${RABBITMQ_AMQP_PORT:-5672}"
PLUGINS=(rabbitmq_management rabbitmq_prometheus)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG_FILE="${RABBITMQ_CONFIG_FILE:-/etc/rabbitmq/rabbitmq.conf}"
TLS_DIR="${ROGATORY_BROKER_TLS_DIR:-/etc/rabbitmq/tls}"
TLS_PORT="${ROGATORY_BROKER_TLS_PORT:-5671}"
TLS_PYTHON="${ROGATORY_PYTHON:-$ROOT/.venv/bin/python}"
BROKER_NOFILE="${ROGATORY_BROKER_NOFILE:-65536}"
NOFILE_DROPIN=/etc/systemd/system/rabbitmq-server.service.d/rogatory-nofile.conf

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

# 1b. TLS material and config (idempotent; see the header).
[[ -x "$TLS_PYTHON" ]] || die "no Python at $TLS_PYTHON for deploy/provision/tls.py (run deploy/run, or set ROGATORY_PYTHON)"
tls_owner=rabbitmq
id -u "$tls_owner" >/dev/null 2>&1 || tls_owner=""
tls_state="$(cd "$ROOT" && as_root "$TLS_PYTHON" -m deploy.provision.tls broker --dir "$TLS_DIR" --config "$CONFIG_FILE" \
    --port "$TLS_PORT" ${tls_owner:+--owner "$tls_owner"})" || die "deploy/provision/tls.py could not set up TLS in $TLS_DIR"
log "TLS material in $TLS_DIR and listener config in $CONFIG_FILE: $tls_state"

# 1c. The broker's own message size limit (protocol.topology.BROKER_MAX_MESSAGE_BYTES) in the config.
max_message_size="$(cd "$ROOT" && as_root "$TLS_PYTHON" -m deploy.provision.broker_limits --config "$CONFIG_FILE")" \
    || die "deploy/provision/broker_limits.py could not write max_message_size into $CONFIG_FILE"
log "max_message_size = $max_message_size in $CONFIG_FILE"

# 1d. Open files: a network of hundreds of agencies holds two broker connections per agency (docs/OPERATIONS.md,
# "Host many agencies in one process"), and RabbitMQ refuses every connection, everyone's, once its file handles
# are spent (1,024 by default: about 200 agencies). The limit is raised for the next start (a systemd drop-in, the
# init script's defaults file, this shell for -detached); a running node keeps its own and is only warned about.
if [[ -d /etc/systemd/system ]] && [[ ! -f "$NOFILE_DROPIN" ]]; then
    as_root mkdir -p "$(dirname "$NOFILE_DROPIN")"
    printf '[Service]\nLimitNOFILE=%s\n' "$BROKER_NOFILE" | as_root tee "$NOFILE_DROPIN" >/dev/null
    as_root systemctl daemon-reload >/dev/null 2>&1 || true
    log "open-file limit $BROKER_NOFILE for the next start: $NOFILE_DROPIN"
fi
if [[ -f /etc/default/rabbitmq-server ]] && ! grep -q '^ulimit -n' /etc/default/rabbitmq-server; then
    # As high as allowed: where the hard limit cannot be raised (a container without CAP_SYS_RESOURCE), the hard
    # limit; never a failing line (the init script runs under `set -e` and would not start the broker at all).
    printf '\n# rogatory (deploy/ensure-rabbitmq.sh): two connections per agency\n%s\n' \
        "ulimit -n $BROKER_NOFILE 2>/dev/null || ulimit -n \"\$(ulimit -H -n)\" 2>/dev/null || true" \
        | as_root tee -a /etc/default/rabbitmq-server >/dev/null
    log "open-file limit $BROKER_NOFILE for the next start: /etc/default/rabbitmq-server"
fi
ulimit -n "$BROKER_NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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

# 3b. A running node's own open-file limit (read from /proc: rabbitmqctl's figure needs the management plugin).
beam_pid="$(pgrep -o beam.smp 2>/dev/null || true)"
if [[ -n "$beam_pid" && -r "/proc/$beam_pid/limits" ]]; then
    node_nofile="$(awk '/^Max open files/ {print $4}' "/proc/$beam_pid/limits")"
    if [[ "$node_nofile" =~ ^[0-9]+$ ]] && ((node_nofile < BROKER_NOFILE)); then
        log "WARNING: the running broker may open $node_nofile files (about $((node_nofile / 5)) agencies); it gets" \
            "$BROKER_NOFILE at its next start (restart it when convenient: this script never restarts a running node)"
    else
        log "the running broker may open $node_nofile files"
    fi
fi

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

# 6. The AMQPS listener: a running node that predates the config gets it online.
if port_open "$AMQP_HOST" "$TLS_PORT"; then
    log "AMQPS listener answers on port $TLS_PORT"
else
    log "starting the AMQPS listener on 127.0.0.1:$TLS_PORT online (the running node predates its config)"
    tls_options="$(cd "$ROOT" && "$TLS_PYTHON" -m deploy.provision.tls listener-opts --dir "$TLS_DIR")"
    result="$(as_root timeout 60 rabbitmqctl -q eval \
        "rabbit_networking:start_ssl_listener({\"127.0.0.1\", $TLS_PORT}, $tls_options, 10)." 2>&1 || true)"
    port_open "$AMQP_HOST" "$TLS_PORT" || die "AMQPS listener did not start on port $TLS_PORT: $result"
    log "AMQPS listener answers on port $TLS_PORT"
fi

# 7. The size limit on a running node that predates its config (new channels take it at once).
if [[ "$(as_root rabbitmqctl -q eval 'application:get_env(rabbit, max_message_size).' 2>/dev/null)" \
    != "{ok,$max_message_size}" ]]; then
    as_root rabbitmqctl -q eval "application:set_env(rabbit, max_message_size, $max_message_size)." >/dev/null \
        || die "could not set max_message_size online"
    log "max_message_size set to $max_message_size on the running node"
fi

log "done: broker running, plugins ${PLUGINS[*]} enabled, management API up, AMQPS on $TLS_PORT"
