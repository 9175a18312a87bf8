#!/usr/bin/env bash
# Tests that restart or reconfigure a broker of their own (tests/private_rabbit.py: delayed
# calls across a restart, TLS) start private RabbitMQ nodes in every test mode, so
# rabbitmq-server must be installed even where the other tests use containers (the cluster
# tests, tests/e2e/test_ha_cluster.py, use RabbitMQ containers there); this installs it from
# Debian's packages when it is missing (and starts nothing).
set -euo pipefail
if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  exit 0
fi
echo "rabbitmq-server is not installed (tests with a private node need it); installing it" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null \
  || echo "could not install rabbitmq-server: tests with a private node will be skipped" >&2
