# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SYNTH  := $(VENV)/bin/synth
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: install demo loop-demo loop-seeds browser layers test test-fast test-slow lint docs bench clean

# torch and torchvision are installed first, pinned to a pair built for each other that lies on this
# machine's disk (a CUDA-enabled build; it runs on CPU too). The package itself does not cap torch.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[local,train,ray,dev,docs]'
	touch $(STAMP)

install: $(STAMP)

# The main job, offline, on the embedded model: one recipe (recipes/quickstart.yaml: demo data -> adapt ->
# self-instruct -> MMEvol -> answers -> filters, dedup -> mix -> preference pairs -> exports -> Hub folder),
# then the HTML report, then LoRA SFT of the embedded model on the demo's scene questions (as text), DPO on
# perturbed pairs of them, and the before/after evaluation on held-out images (synth/train/demo.py).
# Reruns reuse every finished stage and the request cache.
demo: export HF_HUB_OFFLINE := 1
demo: install
	$(SYNTH) run recipes/quickstart.yaml
	rm -rf $(DEMO)/hub && mkdir -p $(DEMO) && cp -r runs/quickstart/hub/repo $(DEMO)/hub
	$(SYNTH) report runs/quickstart/mix runs/quickstart/mmevol runs/quickstart/prefs_perturb runs/quickstart/prefs_hallucinate --out $(DEMO)/report.html
	$(SYNTH) demo-data $(DEMO)/shapes --count 200 --overwrite
	$(SYNTH) adapt $(DEMO)/shapes -t scene_qa_text -o $(DEMO)/scene_qa_train --overwrite
	$(SYNTH) prefs $(DEMO)/scene_qa_train --strategy perturb --scenes $(DEMO)/shapes -o $(DEMO)/prefs --overwrite
	$(PY) -m synth.train.demo $(DEMO) --prefs $(DEMO)/prefs

# The closed loop on the demo shapes (recipes/loop_shapes.yaml): round 0 trains the embedded model on
# labelled scene questions, rounds 1-2 pseudo-label questions about other images with the current model
# (self-consistency gate), retrain, and score each round on held-out images. Resumes where it stopped.
loop-demo: export HF_HUB_OFFLINE := 1
loop-demo: install
	$(SYNTH) loop recipes/loop_shapes.yaml

# Do the pseudo-labels help? Both arms of the loop demo with 5 round seeds each, on 463 held-out questions
# (100 images), rounds 0-1: seeds_pseudo (round 1 adds the kept pseudo-labels) against seeds_control (round 1
# trains on the labelled rows alone), compared round by round on the same rows (docs/loop.md; ~75 min).
LOOP_SEEDS_SET = -s stages.shapes_heldout.count=100 -s loop.eval.limit=500 -s loop.eval.base=false -s loop.rounds=2
loop-seeds: export HF_HUB_OFFLINE := 1
loop-seeds: install
	$(SYNTH) loop recipes/loop_shapes.yaml --seeds 5 --name seeds_pseudo $(LOOP_SEEDS_SET)
	$(SYNTH) loop recipes/loop_shapes.yaml --seeds 5 --name seeds_control $(LOOP_SEEDS_SET) \
	    -s loop.start.pseudo=99 -s "loop.sft.data=[labelled_qa]"
	$(SYNTH) loop-compare seeds_pseudo seeds_control

# The layer contracts, the docs site (--strict), then the fast tests, then the slow ones on the real
# embedded model.
# The report's browser test needs Debian's chromium, CapFilt's compile test a C++ compiler (both installed
# here when missing; needs root).
browser:
	bash .ci/install-browser.sh

# lint-imports first: the layer contracts of pyproject.toml's [tool.importlinter] (no import circles).
layers: install
	$(VENV)/bin/lint-imports

test: install layers browser
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

test-fast: install layers
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check synth tests bench

# The docs site (docs/, mkdocs.yml) into site/; --strict: a broken link or a page left out of the nav fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) bench/adapt_bench.py
	$(PY) bench/llm_bench.py
	$(PY) bench/novelty_bench.py
	$(PY) bench/clean_bench.py
	$(PY) bench/memory_bench.py
	$(PY) bench/run_bench.py
	$(PY) bench/train_bench.py

clean:
	rm -rf $(DEMO) runs site .pytest_cache
