# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint typecheck proto services clean bench images

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services: $(STAMP)
	bash scripts/ensure_rabbitmq.sh

demo: services
	$(PY) examples/demo.py

# DROPLET_TEST_SERVICES=containers runs RabbitMQ and etcd in Docker containers (images built
# on first use); local (the default without Docker) uses the machine's RabbitMQ and a private
# etcd; external uses DROPLET_BROKER_URL and DROPLET_ETCD. See the README's Tests section.
test: $(STAMP) lint
	@if [ "$${DROPLET_TEST_SERVICES:-}" != containers ]; then bash scripts/ensure_rabbitmq.sh; \
	else bash scripts/ensure_rabbitmq_installed.sh; fi
	$(PY) -m pytest -q --durations=30

# The test images (RabbitMQ, etcd, a worker), built when their recipe changed.
images: $(STAMP)
	$(PY) -m tests.containers.images

# The unit tests alone, in-process fault tests included: no RabbitMQ, no etcd.
unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check droplet tests examples
	$(VENV)/bin/mypy droplet

proto: $(STAMP)
	PYTHON=$(PY) bash scripts/gen_proto.sh

bench: services
	$(VENV)/bin/droplet bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
