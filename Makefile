# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint typecheck proto services clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services: $(STAMP)
	bash scripts/ensure_rabbitmq.sh

demo: services
	$(PY) examples/demo.py

test: services lint
	$(PY) -m pytest -q

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
