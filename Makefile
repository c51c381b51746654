# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv when it is missing and install requirements under the torch pin (constraints.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/demo
SOURCES := iemocap msp_podcast cremad ravdess

.PHONY: setup test test-slow lint demo corpora manifests clean-data

setup: $(STAMP)

# Re-runs only when requirements change; a fresh machine needs nothing but Python 3.11.
$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(PY) -m ruff check .

# The embedded default: synthesise the corpora (skipped when complete), then parse each with its loader.
demo: corpora manifests

corpora: $(STAMP)
	$(PY) -m metalearn synth --preset demo --out $(DATA)

manifests: corpora
	for c in esd $(SOURCES); do \
	  $(PY) -m metalearn manifest --corpus $$c --root $(DATA)/$$c --out $(DATA)/manifests/$$c.csv || exit 1; \
	  echo; \
	done

clean-data:
	rm -rf $(DATA)
