# firepath — the two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo setup deps lint unit bench bench-deps clean

setup: deps $(STAMP)

deps:
	@bash scripts/install-deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/python -m pytest -q

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
