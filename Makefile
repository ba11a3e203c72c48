# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/aclImdb_v1_labeled.tar.gz
UNLABELED ?= ../shared/data/aclImdb_v1_unsup.tar.gz
MODEL ?=
TRAIN_ARGS ?=
PEERS ?=
BENCH_ARGS ?=
NAME ?=
FINETUNE_ARGS ?=
# pytest processes (pytest-xdist), a test module each at a time: the suite mostly waits on servers it starts.
TEST_WORKERS ?= 2

.PHONY: run test test-quick lint docs train finetune evaluate bench bench-recovery clean

$(PY):
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt requirements-api.txt requirements-worker.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-api.txt requirements-worker.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

## Start the service on http://127.0.0.1:$${PORT:-8000} (embedded Redis unless SENTIMENT_REDIS_URL is set).
run: $(VENV)/.runtime
	SENTIMENT_MODEL_CONFIG=$${SENTIMENT_MODEL_CONFIG-model_store/models.yaml} $(PY) -m service.launcher

## Lint (style, format, the layering rules), then the whole test suite (starts its own Redis servers, gunicorn and workers).
test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

## Everything but the slow end-to-end tests (browser, Prometheus, schemathesis, committed model served): while working.
test-quick: $(VENV)/.dev
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

## Pages generated from the code: docs/settings.md (every SENTIMENT_* setting, from service/config.py).
docs: $(VENV)/.runtime
	$(PY) -m service.config > docs/settings.md

## Train and export a new model version (DATA=..., UNLABELED=..., TRAIN_ARGS=...).
train: $(VENV)/.dev
	$(PY) -m training --data $(DATA) $(if $(UNLABELED),--unlabeled $(UNLABELED)) --out model_store $(TRAIN_ARGS)

## Fine-tune the movie model on your own labelled texts (DATA=file.csv or .jsonl, NAME=model name, FINETUNE_ARGS=...):
## writes model_store/NAME/<next version> with its report.html and MODEL_CARD.md.
finetune: $(VENV)/.dev
	$(if $(NAME),,$(error NAME is required: make finetune DATA=texts.csv NAME=mymodel))
	$(PY) -m training.finetune --data $(DATA) --name $(NAME) $(FINETUNE_ARGS)

## A model version (MODEL=model_store/sentiment/N, default: the highest): long-text policies compared on its validation split, then full metrics on DATA's test split.
evaluate: $(VENV)/.dev
	$(PY) -m training.evaluate --data $(DATA) $(if $(MODEL),--model $(MODEL)) --split validation --long-texts
	$(PY) -m training.evaluate --data $(DATA) $(if $(MODEL),--model $(MODEL)) --baseline --long-texts

## This service against the naive design, an HTTP echo, itself with a free model, with explanations and
## with head+tail long texts, side by side (PEERS=bentoml adds BentoML, installed in .venv-bentoml).
bench: $(VENV)/.dev
	$(PY) -m bench $(if $(PEERS),--peers $(PEERS)) $(BENCH_ARGS)

## How fast a worker serves: cold start, a crash under load (CLIENTS=16) and a warm restart, with the compile cache.
bench-recovery: $(VENV)/.dev
	$(PY) -m bench.recovery --clients $(or $(CLIENTS),16)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
