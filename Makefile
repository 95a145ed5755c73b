# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SYNTH  := $(VENV)/bin/synth
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: install demo test test-fast test-slow lint bench clean

# torch is installed first, pinned: the CPU wheel 2.13.0 lies on this machine, while an open range
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[local,train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(PY) -m synth.demo $(DEMO)

# Fast tests, then the slow ones on the real embedded model.
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check synth tests bench

bench: install
	$(PY) bench/adapt_bench.py
	$(PY) bench/llm_bench.py
	$(PY) bench/novelty_bench.py
	$(PY) bench/clean_bench.py

clean:
	rm -rf $(DEMO) .pytest_cache
