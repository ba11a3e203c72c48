"""Shared fixtures: real Redis servers on free ports, a tiny real model, the running service."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from service.config import ROOT
from service.embedded_redis import EmbeddedRedis
from tests import synthetic
from tests.helpers import COMPILE_CACHE, Service

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The graphs this process compiles itself (tests of the serving graph, the committed model) share a compile cache too.
os.environ.setdefault("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={COMPILE_CACHE / 'in-process'}")

SHARED_DATA = Path(os.environ.get("SENTIMENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMDB_ARCHIVE = SHARED_DATA / "aclImdb_v1_labeled.tar.gz"
COMMITTED_MODEL_DIR = ROOT / "model_store" / "sentiment"


@pytest.fixture
def redis_server():
    """A private Redis on a free port, killed at the end (tests may kill and restart it)."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory) -> Path:
    """``<store>/sentiment/1``: a small LSTM the tests train in seconds on synthetic reviews."""
    from training.__main__ import main as train

    root = tmp_path_factory.mktemp("tiny")
    data = synthetic.write_imdb_folder(root / "data", per_class=400)
    unlabeled = root / "unlabeled.txt"
    rng = random.Random(1)
    unlabeled.write_text("\n".join(synthetic.review(rng, i % 2 == 0) for i in range(300)), encoding="utf-8")
    store = root / "model_store"
    args = [
        "--data", str(data), "--unlabeled", str(unlabeled), "--distill", "200", "--crops", "200", "--out", str(store), "--version", "1",
        "--vocab-size", "200", "--max-length", "48", "--embedding-dim", "16", "--lstm-units", "8",
        "--epochs", "8", "--patience", "3", "--batch-size", "32", "--learning-rate", "0.01", "--word2vec-epochs", "2",
        "--window", "16", "--max-windows", "4",  # long texts read in windows of 16 tokens, at most 4 (64 tokens)
    ]  # fmt: skip
    assert train(args) == 0
    return store


@pytest.fixture(scope="session")
def tiny_two_versions(tiny_model_store, tmp_path_factory) -> Path:
    """A store of ``sentiment/1`` (the tiny model) and ``sentiment/2``: its network with the output layer negated, so
    that v2 says the opposite of v1 (the same graph, other weights; told apart by any answer)."""
    import shutil

    from service.model_store import resolve
    from training.export import export
    from training.reexport import restore_keras_model

    store = tmp_path_factory.mktemp("two-versions")
    shutil.copytree(tiny_model_store / "sentiment" / "1", store / "sentiment" / "1")
    base = resolve(store / "sentiment", 1)
    negated = restore_keras_model(base)
    head = negated.layers[-1]
    head.set_weights([-w for w in head.get_weights()])
    export(negated, base.load_tokenizer(), store / "sentiment" / "2", {**base.metadata, "version": 2})
    return store


@pytest.fixture(scope="session")
def tiny_two_models(tiny_model_store, tmp_path_factory) -> Path:
    """A store of ``sentiment/1`` (the tiny two-label model) and ``tweets/1``: fine-tuned from it by
    ``python -m training.finetune`` on synthetic texts of three labels (negative, neutral, positive)."""
    import shutil

    from tests.test_finetune import ARGS, write_data
    from training.finetune.__main__ import main as finetune

    store = tmp_path_factory.mktemp("two-models")
    shutil.copytree(tiny_model_store / "sentiment", store / "sentiment")
    data = write_data(store.parent / "tweets.jsonl", ["negative", "neutral", "positive"])
    # The recipe the end-to-end expectations were set with (the tiny base learns its new cue words by it); the
    # defaults' frozen first epoch is for real data.
    recipe = [*ARGS, "--epochs", "6", "--distill", "0.5", "--freeze-embedding-epochs", "0"]
    arguments = ["--data", str(data), "--name", "tweets", "--model-store", str(store), "--base", str(store / "sentiment")]
    assert finetune([*arguments, *recipe]) == 0
    return store


@pytest.fixture(scope="module")
def module_redis():
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="module")
def service(module_redis, tiny_model_store, tmp_path_factory):
    """One API process and one inference worker, shared by a module's contract tests."""
    svc = Service(
        module_redis.url,
        tiny_model_store,
        settings={
            "SENTIMENT_MAX_TEXTS_PER_REQUEST": "8",
            "SENTIMENT_MAX_TEXT_CHARS": "5000",
            "SENTIMENT_MAX_BODY_BYTES": "65536",
            "SENTIMENT_QUEUE_MAX_REQUESTS": "16",
            "SENTIMENT_MAX_WINDOWS_PER_REQUEST": "32",  # 8 texts x 4 windows: never reached by an accepted count
            "SENTIMENT_API_CONCURRENCY": "32",
        },
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    with svc.running():
        yield svc
