# Postback's front door. `make run` serves; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# config.yaml is made from the example only when POSTBACK_CONFIG is unset.
ifeq ($(origin POSTBACK_CONFIG), undefined)
CONFIG_FILE := config.yaml
else
CONFIG_FILE :=
endif

.PHONY: run test check-config bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

config.yaml:
	cp config.example.yaml $@

run: $(VENV)/.installed $(CONFIG_FILE)
	$(PY) cli.py check-config
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

check-config: $(VENV)/.installed
	$(PY) cli.py check-config

# Ingest (wrk vs a bare Flask endpoint), dispatch and footprint on this box: one Markdown table on
# stdout and in bench/out/last.md. Knobs (BENCH_RUNS, BENCH_SECONDS, BENCH_EVENTS, ...): bench/run.py.
bench: $(VENV)/.installed-dev
	command -v wrk >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
