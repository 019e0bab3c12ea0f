# sgcl-studio — `make run` starts the app (and its worker); `make test` runs the whole test suite.
# Both create .venv and install the project on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SGCL_HOME ?= $(CURDIR)/sgcl-data
PORT ?= 8501

.PHONY: install browser-deps run worker serve test bench clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The worker runs beside the app and stops with it (Ctrl-C); the app would also start one itself.
run: install
	$(PY) -m core.cli init
	$(PY) -m core.worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true

worker: install
	$(PY) -m core.worker

# The inference service (core/serve.py): `make serve RUN=1` follows run 1's newest bundle, or
# `make serve BUNDLE=model.zip`; tokens are made on the Admin page. SERVE_PORT (8600), SERVE_HOST.
SERVE_PORT ?= 8600
SERVE_HOST ?= 127.0.0.1
serve: install
	@if [ -n "$(BUNDLE)" ]; then src="--bundle $(BUNDLE)"; elif [ -n "$(RUN)" ]; then src="--run $(RUN)"; \
	  else echo "usage: make serve RUN=<run id>  or  make serve BUNDLE=<bundle.zip>" >&2; exit 2; fi; \
	$(PY) -m core.serve $$src --host $(SERVE_HOST) --port $(SERVE_PORT)

# The real-browser test drives Debian's chromium (never a browser build downloaded by a test tool);
# a Japanese font makes its screenshots readable. Installed through apt when missing and we are root;
# otherwise that test fails and says why.
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@if [ ! -x $(CHROMIUM) ] || ! dpkg -s fonts-ipafont-gothic >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null; \
	  else echo "note: $(CHROMIUM) or fonts-ipafont-gothic missing and not root: install them with apt" >&2; fi; \
	fi

# Static security check first (bandit, configured and justified in pyproject.toml [tool.bandit]).
# Its "nosec encountered (B608), but no failed test" warnings on f-string SQL are a known bandit bug
# (PyCQA/bandit#1204, fix pending in #1362): the marked lines are suppressed findings, not unused markers.
test: install browser-deps
	$(PY) -m bandit -q -c pyproject.toml -r core pages glossary app.py
	$(PY) -m pytest -q -ra

bench: install
	$(PY) bench/step_benchmark.py
	$(PY) bench/neighbours_latency.py
	$(PY) bench/task_speed.py $${TMPDIR:-/tmp}/sgcl-task-speed
	$(PY) bench/page_speed.py
