# The README's two commands are `make demo` and `make test`; CI (.ci/run) runs `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: system venv demo lint typecheck pytest test bench

system:  ## Redis and RabbitMQ servers the tests start on loopback; docker-compose validates compose.yaml
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y redis-server rabbitmq-server
# docker-compose: only `config -q` runs (there is no engine), so not its recommended docker.io
	$(SUDO) apt-get install -y --no-install-recommends docker-compose

venv:  ## the package with its test extras
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'

demo: venv  ## `sluice demo` on the embedded Redis
	$(VENV)/bin/sluice demo

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:  ## exit code 5 (no tests collected) fails like any other
	CI=$${CI:-1} $(VENV)/bin/pytest -q

test: system venv lint typecheck pytest

bench: venv
	$(PY) bench/async_throughput.py
	$(PY) bench/api_invoke.py
	$(PY) bench/filter.py
	$(PY) bench/sqs_poller.py
	$(PY) bench/kinesis_poller.py
	$(PY) bench/replay.py
