#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs docker.io when docker or dockerd is missing,
# starts dockerd (as root, in the background, logging to /var/log/dockerd.log) when the
# engine does not answer, and waits for it at most DOCKER_WAIT_S seconds (60).
# Exit status 0 when `docker info` answers, 1 otherwise (with the reason on stderr).
set -uo pipefail
WAIT_S="${DOCKER_WAIT_S:-60}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "start_docker.sh: Docker is not installed (apt-get install docker.io)" >&2
    exit 1
  fi
  echo "start_docker.sh: installing docker.io" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } \
    >/dev/null || { echo "start_docker.sh: could not install docker.io" >&2; exit 1; }
fi
answers && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "start_docker.sh: the Docker engine does not answer and only root may start it" >&2
  exit 1
fi
echo "start_docker.sh: starting dockerd (log in $LOG)" >&2
nohup dockerd >>"$LOG" 2>&1 &
for _ in $(seq 1 "$WAIT_S"); do
  answers && exit 0
  sleep 1
done
echo "start_docker.sh: the Docker engine did not answer within ${WAIT_S}s; last lines of $LOG:" >&2
tail -n 5 "$LOG" >&2 2>/dev/null
exit 1
