# sgcl-studio — `make run` starts the app (and its worker); `make test` runs the whole test suite.
# Both create .venv and install the project on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SGCL_HOME ?= $(CURDIR)/sgcl-data
PORT ?= 8501

.PHONY: install run worker test bench clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true

worker: install
	$(PY) -m core.worker

test: install
	$(PY) -m pytest -q -ra

bench: install
	$(PY) bench/step_benchmark.py
	$(PY) bench/neighbours_latency.py
