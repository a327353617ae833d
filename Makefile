# Entry points. Every target sets up what it needs first (scripts/setup.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint typecheck bench generate clean

setup:
	scripts/setup.sh sidecar,serving,demo,dev

demo: setup
	$(PY) -m serving.demo

test: setup lint typecheck
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) dashboards/kibana/generate.py --check
	$(PY) -m alerts.generate --check
	$(PY) -m dashboards.grafana.generate --check
	$(PY) k8s/generate.py --check

# Regenerate the committed artefacts (CI checks them with --check in `lint`).
generate: setup
	$(PY) dashboards/kibana/generate.py
	$(PY) -m alerts.generate
	$(PY) -m dashboards.grafana.generate
	$(PY) k8s/generate.py

typecheck: setup
	$(VENV)/bin/mypy

bench:
	scripts/setup.sh sidecar,serving,demo,dev,bench
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
