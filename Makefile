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

# The Dagster UI over the assets, with its storage in .visionledger/dagster (see dagster.postgres.yaml for
# the variant on the catalog's PostgreSQL).
dagster: setup
	mkdir -p .visionledger/dagster
	cp -n dagster.yaml .visionledger/dagster/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.visionledger/dagster $(VENV)/bin/dagster dev -m assets.definitions

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python bench/bench_append.py
	$(VENV)/bin/python bench/bench_projections.py
	$(VENV)/bin/python bench/bench_lake.py
