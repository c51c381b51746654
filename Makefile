# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Both create .venv when it is missing and install requirements under the torch pin.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/demo

.PHONY: setup test test-slow lint demo clean-data

setup: $(STAMP)

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

demo: $(STAMP)
	$(PY) -m metalearn synth --preset demo --out $(DATA)
	for c in esd iemocap msp_podcast cremad ravdess; do \
	  $(PY) -m metalearn manifest --corpus $$c --root $(DATA)/$$c --out $(DATA)/manifests/$$c.csv || exit 1; \
	done

clean-data:
	rm -rf $(DATA)
