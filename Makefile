# Set-up lives here so that a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(STAMP)  ## start the embedded stack, publish traffic, show it land in ClickHouse
	$(BIN)/llmwatch demo

test: $(STAMP)  ## unit, functional and integration tests (real broker, real store)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
