#!/usr/bin/env bash
# Runs Droplet workers (and, with --scheduler, a scheduler) on this VM as Docker containers
# of the worker image. Docker restarts each one when it dies and after a reboot
# (--restart unless-stopped). Running the script again replaces the containers one at a
# time (docker stop lets a worker finish its call and leave the fleet): that is an upgrade.
#
#   deploy/docker/run-workers.sh -n 8 --env-file /etc/droplet/droplet.env
#
# Options:
#   -n N             how many workers (default: one per core)
#   --image IMAGE    the worker image (default droplet-worker)
#   --env-file FILE  DROPLET_* settings, NAME=value per line (default /etc/droplet/droplet.env)
#   --config FILE    a droplet.toml, mounted read-only and named by DROPLET_CONFIG
#   --name PREFIX    containers PREFIX-1..N and PREFIX-scheduler (default droplet-worker)
#   --scheduler      also run one scheduler
#   --network NET    the containers' network (default host: the VM's own addresses)
#   --stop-timeout S seconds `docker stop` waits for a call in hand (default 300)
#   --remove         stop and remove the containers PREFIX-* instead
# Worker ids are <VM hostname>-<slot> (vm-w1-3), the same after every restart.
set -euo pipefail

WORKERS="$(nproc 2>/dev/null || echo 2)"
IMAGE=droplet-worker
ENV_FILE=/etc/droplet/droplet.env
CONFIG=""
PREFIX=droplet-worker
SCHEDULER=no
NETWORK=host
STOP_TIMEOUT=300
REMOVE=no

die() { echo "run-workers.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        -n) WORKERS="${2:?-n needs a number}"; shift 2 ;;
        --image) IMAGE="${2:?--image needs an image}"; shift 2 ;;
        --env-file) ENV_FILE="${2:?--env-file needs a file}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --name) PREFIX="${2:?--name needs a prefix}"; shift 2 ;;
        --scheduler) SCHEDULER=yes; shift ;;
        --network) NETWORK="${2:?--network needs a network}"; shift 2 ;;
        --stop-timeout) STOP_TIMEOUT="${2:?--stop-timeout needs seconds}"; shift 2 ;;
        --remove) REMOVE=yes; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$WORKERS" in ''|*[!0-9]*) die "-n needs a number" ;; esac

if [ "$REMOVE" = yes ]; then
    names="$(docker ps -a --format '{{.Names}}' | grep -E "^${PREFIX}-([0-9]+|scheduler)\$" || true)"
    for name in $names; do
        docker stop -t "$STOP_TIMEOUT" "$name" >/dev/null || true
        docker rm -f "$name" >/dev/null
        echo "removed $name"
    done
    exit 0
fi

[ -f "$ENV_FILE" ] || [ -n "$CONFIG" ] || die "no $ENV_FILE (or give --config droplet.toml)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE (see deploy/README.md)"
HOST="$(hostname)"
common=(--detach --restart unless-stopped --network "$NETWORK" --stop-timeout "$STOP_TIMEOUT"
        --log-opt max-size=20m --log-opt max-file=3)
[ -f "$ENV_FILE" ] && common+=(--env-file "$ENV_FILE")
if [ -n "$CONFIG" ]; then
    CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
    common+=(--volume "$CONFIG:/etc/droplet/droplet.toml:ro"
             --env DROPLET_CONFIG=/etc/droplet/droplet.toml)
fi

# One container: replaced (stopped gracefully, removed) when it exists, then started.
run() {
    local name="$1"; shift
    if docker container inspect "$name" >/dev/null 2>&1; then
        docker stop -t "$STOP_TIMEOUT" "$name" >/dev/null || true
        docker rm -f "$name" >/dev/null
    fi
    docker run "${common[@]}" --name "$name" "$IMAGE" "$@" >/dev/null
    echo "started $name: $*"
}

if [ "$SCHEDULER" = yes ]; then
    run "$PREFIX-scheduler" scheduler
fi
for slot in $(seq 1 "$WORKERS"); do
    run "$PREFIX-$slot" worker --id "$HOST-$slot"
done
