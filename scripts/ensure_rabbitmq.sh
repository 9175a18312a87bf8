#!/usr/bin/env bash
# Makes sure a RabbitMQ answers on 127.0.0.1:5672 (only when DROPLET_BROKER_URL is unset):
# starts a local rabbitmq-server if one is installed but stopped, or installs it from Debian.
set -euo pipefail
if [ -n "${DROPLET_BROKER_URL:-}" ] || [ "${DROPLET_TEST_SERVICES:-}" = "external" ]; then
  exit 0
fi
answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if answers; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not installed; installing it from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
echo "starting rabbitmq-server" >&2
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 60); do
  if answers; then exit 0; fi
  sleep 1
done
echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2
exit 1
