# Postback's front door. `make run` serves; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export POSTBACK_CONFIG ?= config.yaml

.PHONY: run test check-config bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(POSTBACK_CONFIG):
	cp config.example.yaml $@

run: $(VENV)/.installed $(POSTBACK_CONFIG)
	$(PY) app.py check-config
	$(VENV)/bin/gunicorn -c gunicorn.conf.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

check-config: $(VENV)/.installed
	$(PY) app.py check-config

clean:
	rm -rf $(VENV) .pytest_cache
