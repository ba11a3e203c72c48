# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/aclImdb_v1_labeled.tar.gz
UNLABELED ?= ../shared/data/aclImdb_v1_unsup.tar.gz
MODEL ?=
TRAIN_ARGS ?=

.PHONY: run test lint train evaluate bench clean

$(PY):
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

## Start the service on http://127.0.0.1:$${PORT:-8000} (embedded Redis unless SENTIMENT_REDIS_URL is set).
run: $(VENV)/.runtime
	$(PY) -m service.launcher

## Lint, then the whole test suite (starts its own Redis servers, gunicorn and workers).
test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## Train and export a new model version (DATA=..., UNLABELED=..., TRAIN_ARGS=...).
train: $(VENV)/.dev
	$(PY) -m training --data $(DATA) $(if $(UNLABELED),--unlabeled $(UNLABELED)) --out model_store $(TRAIN_ARGS)

## Full metrics of a model version (MODEL=model_store/sentiment/N, default: the highest) on DATA's test split.
evaluate: $(VENV)/.dev
	$(PY) -m training.evaluate --data $(DATA) $(if $(MODEL),--model $(MODEL)) --baseline --truncation

## This service against the naive one-request-one-model-call design, side by side.
bench: $(VENV)/.dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
