#!/usr/bin/env bash
# The cluster tests (tests/e2e/test_ha_cluster.py) start private RabbitMQ nodes of their own
# in every test mode, so rabbitmq-server must be installed even where the other tests use
# containers; this installs it from Debian's packages when it is missing (and starts nothing).
set -euo pipefail
if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  exit 0
fi
echo "rabbitmq-server is not installed (the cluster tests need it); installing it" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null \
  || echo "could not install rabbitmq-server: the cluster tests will be skipped" >&2
