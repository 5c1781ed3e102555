# firepath — the two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo setup deps deps-containers lint unit bench bench-deps clean

setup: deps $(STAMP)

deps:
	@bash scripts/install-deps.sh

# Docker engine, docker-compose and debootstrap for tests/test_containers.py (and starts dockerd)
deps-containers:
	@bash scripts/install-deps.sh --containers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: setup deps-containers lint
	$(VENV)/bin/python -m pytest -q --durations=20

unit: setup
	$(VENV)/bin/python -m pytest -q -m "not ovs"

demo: setup
	$(VENV)/bin/firepath lab demo

bench-deps:
	@bash scripts/install-deps.sh --bench

bench: setup bench-deps
	$(VENV)/bin/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
