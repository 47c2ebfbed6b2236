# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-faults install lint typecheck docs docs-serve clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `make run` installs only what running needs; `make test` (and the other targets) the
# whole [dev] extra: pytest, Dask, the docs tools, Jupyter for the notebook tests.
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/checkpoint run main

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The long fault-injection loops (30+ random kill -9s, ...); prints the figures.
test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -s -m faults

lint: $(STAMP)
	$(BIN)/ruff check checkpoint tests examples tools

typecheck: $(STAMP)
	$(BIN)/mypy checkpoint

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) .cache build *.egg-info

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --peers --peer-size 500 --timeout 300
	$(BIN)/python benchmarks/large_bench.py
	$(BIN)/python benchmarks/files_bench.py
	$(BIN)/python benchmarks/chain_bench.py
