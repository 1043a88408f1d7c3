# Postback's front door. `make run` serves; `make test` runs the whole suite; `make test-postgres` runs it again
# against a throwaway PostgreSQL server (scripts/with-postgres.sh).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# config.yaml is made from the example only when POSTBACK_CONFIG is unset.
ifeq ($(origin POSTBACK_CONFIG), undefined)
CONFIG_FILE := config.yaml
else
CONFIG_FILE :=
endif

.PHONY: run test test-postgres chromium check-config bench clean

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

test: $(VENV)/.installed-dev chromium
	$(PY) -m pytest -rs $(PYTEST_ARGS)

# The same suite with DATABASE_URL naming a PostgreSQL server started for it, and stopped after (docs/postgresql.md).
test-postgres: $(VENV)/.installed-dev
	scripts/with-postgres.sh $(MAKE) test

# The console's browser tests drive Debian's Chromium (never Playwright's own download). Where it cannot be
# installed they skip, with the reason in pytest's summary; under CI=true they fail instead.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
	      || echo "make test: apt-get could not install chromium: the browser tests will not run"; \
	  else \
	    echo "make test: chromium is missing and apt-get (as root) is not available to install it: the browser tests will not run"; \
	  fi; }

check-config: $(VENV)/.installed
	$(PY) cli.py check-config

# Judges Postback's speed targets on this box (docs/performance.md): ingest and the pixel against bare Flask in
# alternating pairs, dispatch to fake platforms, RSS and database bytes; one Markdown table of verdicts on stdout
# and in bench/out/last.md. Exit 0 when a target is missed (a finding), 1 on a failed request, a lost or duplicated
# event or a dead process. About 6 minutes; quick: BENCH_PAIRS=1 BENCH_SECONDS=2 BENCH_EVENTS=2000 make bench;
# the 1,000,000-event RSS run: BENCH_MILLION=1 make bench. Every knob: bench/run.py.
bench: $(VENV)/.installed-dev
	command -v wrk >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
