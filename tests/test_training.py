"""Training → export → plain `tf.saved_model.load`: signatures, metadata, tokenizer parity."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from service.model_store import resolve
from service.tokenizer import Tokenizer
from tests.conftest import COMMITTED_MODEL_DIR

tf = pytest.importorskip("tensorflow")

ODD_PIECES = [
    "<br />", "<BR/>", "<br>", "<br\t/>", "!!!", "?!", "...", "(wow)", "\"quoted\"", "don't", "it’s", "rock'n'roll", "´tis",
    "10/10", "3.5", "foo_bar", "e-mail", "😀", "👍🏽", "🎬🍿", "❤️", "\u200d", "\u00a0", "\t", "\n", "café", "CAFÉ", "cafe\u0301",
    "NAÏVE", "Straße", "STRASSE", "ΟΔΟΣ", "İstanbul", "ǅemal", "фильм", "ФИЛЬМ", "映画", "映画は最高", "فيلم", "फ़िल्म", "ﬁlm",
    "Ⅻ", "²", "½", "١٢٣", "#hashtag", "@user", "http://x.y/z?a=b", "ALLCAPS", "MiXeD", "_", "''", "\\", "<i>tag</i>", "&amp;",
]  # fmt: skip


def parity_texts(vocabulary: list[str], n: int, seed: int = 0) -> list[str]:
    """Texts mixing vocabulary words (in random case) with punctuation, markup, emoji and non-ASCII pieces."""
    rng = random.Random(seed)
    words = vocabulary[2:]
    texts = ["", "!!!", "😀", "<br /><br />", " ", "a" * 50]
    while len(texts) < n:
        pieces = []
        for _ in range(rng.choice([1, 3, 10, 40, 120, 300])):
            piece = rng.choice(words) if rng.random() < 0.7 else rng.choice(ODD_PIECES)
            piece = rng.choice([piece, piece.upper(), piece.title()])
            pieces.append(piece + rng.choice(["", "", " ", ",", ".", "!", "?", "'", "’"]))
        texts.append(rng.choice([" ", "", "  "]).join(pieces))
    return texts


def check_parity(version_dir, n_texts: int) -> None:
    version = resolve(version_dir.parent, int(version_dir.name))
    tokenizer = version.load_tokenizer()
    loaded = tf.saved_model.load(str(version.path))
    serve, predict_text = loaded.signatures["serving_default"], loaded.signatures["predict_text"]
    texts = parity_texts(tokenizer.vocabulary, n_texts)
    assert len(texts) >= 1000
    mismatched_ids = 0
    for start in range(0, len(texts), 100):
        chunk = texts[start : start + 100]
        encoded = tokenizer.encode_batch(chunk)
        graph = predict_text(texts=tf.constant(chunk))
        graph_ids = graph["token_ids"].numpy()
        width = max(len(e.ids) for e in encoded)
        assert graph_ids.shape == (len(chunk), width)
        python_ids = np.zeros((len(chunk), width), dtype=np.int32)
        for row, e in enumerate(encoded):
            python_ids[row, : len(e.ids)] = e.ids
        for row in np.flatnonzero((graph_ids != python_ids).any(axis=1)):
            mismatched_ids += 1
            print("ids differ for", repr(chunk[row][:200]))  # noqa: T201 - shown only when the test fails
        np.testing.assert_array_equal(graph["n_tokens"].numpy(), [e.n_tokens for e in encoded])
        python_scores = serve(token_ids=tf.constant(python_ids))["probability"].numpy()
        np.testing.assert_allclose(graph["probability"].numpy(), python_scores, atol=1e-5)
    assert mismatched_ids == 0


def test_tiny_model_export_has_both_signatures_and_metadata(tiny_model_store):
    version_dir = tiny_model_store / "sentiment" / "1"
    for name in ("saved_model.pb", "variables", "assets/vocab.txt", "assets/tokenizer.json", "metadata.json", "MODEL_CARD.md"):
        assert (version_dir / name).exists(), name
    loaded = tf.saved_model.load(str(version_dir))
    assert set(loaded.signatures) == {"serving_default", "predict_text"}
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["token_ids"].dtype == tf.int32
    probability = serve(token_ids=tf.constant([[2, 3, 4, 0], [5, 0, 0, 0]], dtype=tf.int32))["probability"]
    assert probability.dtype == tf.float32 and probability.shape == (2,)
    assert np.all((probability.numpy() >= 0) & (probability.numpy() <= 1))

    saved = [name for name, _ in tf.train.list_variables(str(version_dir / "variables" / "variables"))]
    assert any("embeddings" in name for name in saved) and not [n for n in saved if "optimizer" in n]  # weights only

    meta = json.loads((version_dir / "metadata.json").read_text())
    for key in ("name", "version", "created_at", "dataset", "hyperparameters", "tensorflow_version", "keras_version",
                "label_names", "decision_threshold", "metrics", "training_seconds"):  # fmt: skip
        assert key in meta, key
    assert meta["name"] == "sentiment" and meta["version"] == 1
    assert len(meta["dataset"]["sha256"]) == 64
    assert meta["label_names"] == ["negative", "positive"]
    for split in ("validation", "test"):
        assert {"accuracy", "roc_auc", "f1", "ece"} <= set(meta["metrics"][split])
    # The synthetic task is easy: a model that learned nothing would sit near 0.5.
    assert meta["metrics"]["test"]["accuracy"] >= 0.9
    assert meta["dataset"]["distilled"] == 200 and meta["dataset"]["crops"] == 200
    assert meta["metrics"]["teacher_nb_trigram_logreg_test"]["accuracy"] >= 0.9
    # Training accuracy counts soft (distilled) targets by their side of 0.5, so it is comparable to validation accuracy.
    assert meta["history"]["accuracy"][-1] >= 0.8


def test_tiny_model_learned_the_polarity_words(tiny_model_store):
    loaded = tf.saved_model.load(str(tiny_model_store / "sentiment" / "1"))
    texts = ["the movie was great wonderful superb", "the movie was awful boring terrible"]
    positive, negative = loaded.signatures["predict_text"](texts=tf.constant(texts))["probability"].numpy()
    assert positive > 0.5 > negative


def test_padding_does_not_change_a_score(tiny_model_store):
    """Masking: a text scores the same alone or beside a longer one (the workers batch unrelated requests)."""
    serve = tf.saved_model.load(str(tiny_model_store / "sentiment" / "1")).signatures["serving_default"]
    alone = serve(token_ids=tf.constant([[5, 6, 7]], dtype=tf.int32))["probability"].numpy()[0]
    padded = serve(token_ids=tf.constant([[5, 6, 7] + [0] * 37, list(range(2, 42))], dtype=tf.int32))["probability"].numpy()[0]
    assert abs(alone - padded) < 1e-5


def test_predict_text_matches_python_tokenizer_tiny(tiny_model_store):
    check_parity(tiny_model_store / "sentiment" / "1", 1000)


def test_predict_text_matches_python_tokenizer_committed():
    versions = sorted(p for p in COMMITTED_MODEL_DIR.glob("[0-9]*") if p.is_dir())
    if not versions:
        pytest.fail("no committed model under model_store/sentiment")
    check_parity(versions[-1], 1200)


def test_export_goes_to_the_next_version_atomically(tiny_model_store, tmp_path):
    from training.export import next_version

    assert next_version(tiny_model_store / "sentiment") == 2
    assert next_version(tmp_path / "nothing") == 1
    assert not [p for p in (tiny_model_store / "sentiment").iterdir() if p.name.startswith(".")]  # no staging left over


def test_head_and_tail_truncation_in_graph(tiny_model_store):
    version = resolve(tiny_model_store / "sentiment", 1)
    tokenizer: Tokenizer = version.load_tokenizer()
    predict_text = tf.saved_model.load(str(version.path)).signatures["predict_text"]
    words = tokenizer.vocabulary[2:]
    text = " ".join(words[i % len(words)] for i in range(tokenizer.max_length * 3))
    out = predict_text(texts=tf.constant([text]))
    expected = tokenizer.encode(text)
    assert expected.truncated and out["n_tokens"].numpy()[0] == tokenizer.max_length * 3
    assert out["token_ids"].numpy()[0].tolist() == expected.ids
