# The two commands of the README, and what they need.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench dagster

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/visionledger demo

test: setup
	$(VENV)/bin/python -m pytest

# The Dagster UI over the assets, on the instance beside the catalog ($VISIONLEDGER_HOME/dagster, where the
# demo records its runs; see dagster.postgres.yaml for the variant on the catalog's PostgreSQL).
DAGSTER_HOME_DIR = $(abspath $(or $(VISIONLEDGER_HOME),.visionledger))/dagster

dagster: setup
	mkdir -p $(DAGSTER_HOME_DIR)
	test -f $(DAGSTER_HOME_DIR)/dagster.yaml || cp dagster.yaml $(DAGSTER_HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(VENV)/bin/dagster dev -m assets.definitions

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python bench/bench_append.py
	$(VENV)/bin/python bench/bench_projections.py
	$(VENV)/bin/python bench/bench_lake.py
