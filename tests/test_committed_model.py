"""The committed artifact: its metadata, its accuracy on IMDB, and serving it for real."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.model_store import resolve
from tests.conftest import COMMITTED_MODEL_DIR, IMDB_ARCHIVE
from tests.helpers import Service

SHORT_TEXTS = {
    "I loved this movie.": "positive",
    "What a wonderful, touching film!": "positive",
    "Great acting and a clever plot.": "positive",
    "Highly recommended.": "positive",
    "This phone works perfectly, great battery life.": "positive",
    "Terrible film, a complete waste of time.": "negative",
    "The plot was boring and the acting was awful.": "negative",
    "I want my money back.": "negative",
    "The worst book I have read this year.": "negative",
}
# Seen wrong by the committed model (an idiom; product vocabulary it rarely met in movie reviews); its model card lists them.
KNOWN_MISSES = {"Broke after two days, do not buy.": "negative", "Two hours I will never get back.": "negative"}


@pytest.fixture(scope="module")
def committed():
    return resolve(COMMITTED_MODEL_DIR)


def expected_weights(meta: dict) -> int:
    """Floats an export of this architecture stores: the network's parameters, plus the fused serving graph's copy of them
    (gate tables: input projection and bias folded into the embedding, one per direction; recurrent and dense kernels)."""
    arch = meta["architecture"]
    directions = 2 if arch["bidirectional"] else 1
    vocab, dim, units = arch["vocab_size"], arch["embedding_dim"], arch["lstm_units"]
    network = vocab * dim + directions * (dim * 4 * units + units * 4 * units + 4 * units) + directions * units + 1
    if meta.get("serving", {}).get("graph") != "fused-xla":
        return network
    return network + directions * (vocab * 4 * units + units * 4 * units) + directions * units + 1


@pytest.mark.parametrize("version", sorted(int(p.name) for p in COMMITTED_MODEL_DIR.glob("[0-9]*") if p.is_dir()))
def test_metadata_and_size(version):
    committed = resolve(COMMITTED_MODEL_DIR, version)
    meta = committed.metadata
    assert meta["name"] == "sentiment" and meta["version"] == committed.version
    assert meta["metrics"]["test"]["n"] == 25_000 and meta["metrics"]["test"]["accuracy"] >= 0.89
    assert meta["training_seconds"] < 20 * 60
    for key in ("roc_auc", "f1", "ece"):
        assert key in meta["metrics"]["test"]
    assert "baseline_tfidf_logreg_test" in meta["metrics"]
    # The weights as float32, once each: optimizer state, a second copy or weights frozen into the graph would break this.
    weights = sum(f.stat().st_size for f in (committed.path / "variables").iterdir())
    assert abs(weights - 4 * expected_weights(meta)) < 0.01 * 4 * expected_weights(meta), (weights, 4 * expected_weights(meta))
    rest = sum(f.stat().st_size for f in committed.path.rglob("*") if f.is_file() and f.parent.name != "variables")
    assert rest < 2 * 2**20, rest  # graph, vocabulary, metadata, model card
    assert (committed.path / "MODEL_CARD.md").read_text().count("|") > 20
    assert json.loads((committed.path / "assets" / "tokenizer.json").read_text())["vocab_size"] == meta["vocab_size"]


@pytest.mark.skipif(not IMDB_ARCHIVE.exists(), reason=f"IMDB data not found at {IMDB_ARCHIVE} (set SENTIMENT_SHARED_DATA)")
def test_accuracy_on_2000_imdb_test_reviews(committed):
    import tensorflow as tf

    from training.data import load
    from training.long_texts import score_texts
    from training.pipeline import predict_sorted

    test = load(IMDB_ARCHIVE)["test"]
    pick = np.random.default_rng(0).choice(len(test), 2000, replace=False)
    texts, labels = [test.texts[i] for i in pick], np.array([test.labels[i] for i in pick])
    serve = tf.saved_model.load(str(committed.path)).signatures["serving_default"]

    def score(sequences):
        return predict_sorted(lambda ids: serve(token_ids=tf.constant(ids))["probability"].numpy(), sequences)

    probabilities, _ = score_texts(score, committed.load_tokenizer(), texts)  # long texts read as the version serves them
    accuracy = float(((probabilities >= 0.5) == labels).mean())
    assert accuracy >= 0.88, accuracy


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real SavedModel behind the real API and a real worker."""
    from service.embedded_redis import EmbeddedRedis

    logs = tmp_path_factory.mktemp("served")
    with EmbeddedRedis() as redis_server, Service(redis_server.url, COMMITTED_MODEL_DIR.parent, log_dir=logs).running() as svc:
        yield svc


def labels_of(svc: Service, texts: list[str]) -> list[str]:
    response = svc.predict({"texts": texts})
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


@pytest.mark.slow
def test_short_texts_served_end_to_end(served):
    assert labels_of(served, list(SHORT_TEXTS)) == list(SHORT_TEXTS.values())


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limit of the committed model: product-review vocabulary, idioms (see MODEL_CARD.md)")
def test_known_misses(served):
    assert labels_of(served, list(KNOWN_MISSES)) == list(KNOWN_MISSES.values())


@pytest.mark.slow
def test_long_reviews_are_read_whole_in_windows_up_to_the_bound(served, committed):
    policy = committed.long_texts
    assert (policy.kind, policy.window, policy.max_windows) == ("windows", 400, 16)
    long_review = " ".join(["The first half drags and the dialogue is clumsy."] * 40 + ["But the ending is superb, I loved it."] * 50)
    [prediction] = served.predict({"text": long_review}).json()["predictions"]
    assert prediction["truncated"] is False and prediction["tokens"] == 760 and prediction["windows"] == 2
    huge = "A fine film with a superb cast. " * 1100  # 7,700 tokens: past 16 windows of 400
    [prediction] = served.predict({"text": huge}).json()["predictions"]
    assert prediction["truncated"] is True and prediction["tokens"] == 7700 and prediction["windows"] == 16
