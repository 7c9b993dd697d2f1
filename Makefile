# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install dev run worker test bench bench-rq loadtest soak models clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

run: $(VENV)/.installed
	HOST=$(HOST) PORT=$(PORT) $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

# A model-warm job worker: needs SENSEFLOSSER_REDIS_URL (and the web servers' SENSEFLOSSER_DATA_DIR).
worker: $(VENV)/.installed
	$(PY) -m app.worker

test: $(VENV)/.dev
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PY) -m benchmarks.bench

bench-rq: $(VENV)/.dev
	$(PY) -m benchmarks.rq_bench

loadtest: $(VENV)/.dev
	$(PY) -m benchmarks.loadtest

soak: $(VENV)/.dev
	$(PY) -m benchmarks.loadtest --soak

models: $(VENV)/.installed
	bash scripts/make_models.sh

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
