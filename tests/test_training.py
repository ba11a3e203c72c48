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
    """``predict_text`` (tokenizer and long-text policy in TensorFlow ops) against the service's Python path:
    the same ids, the same windows, and the same combined score (windows scored by ``serving_default``)."""
    from service.tokenizer import combine

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
        read = [[token for window in e.windows for token in window] for e in encoded]  # what the model reads, in order
        width = max(len(r) for r in read)
        assert graph_ids.shape == (len(chunk), width)
        python_ids = np.zeros((len(chunk), width), dtype=np.int32)
        for row, ids in enumerate(read):
            python_ids[row, : len(ids)] = ids
        for row in np.flatnonzero((graph_ids != python_ids).any(axis=1)):
            mismatched_ids += 1
            print("ids differ for", repr(chunk[row][:200]))  # noqa: T201 - shown only when the test fails
        np.testing.assert_array_equal(graph["n_tokens"].numpy(), [e.n_tokens for e in encoded])
        np.testing.assert_array_equal(graph["windows"].numpy(), [len(e.windows) for e in encoded])
        windows = [w for e in encoded for w in e.windows]
        padded = np.zeros((len(windows), max(len(w) for w in windows)), dtype=np.int32)
        for row, window in enumerate(windows):
            padded[row, : len(window)] = window
        window_scores = serve(token_ids=tf.constant(padded))["probability"].numpy()
        python_scores, first = [], 0
        for e in encoded:
            last = first + len(e.windows)
            python_scores.append(combine(window_scores[first:last].tolist(), [len(w) for w in e.windows], tokenizer.long_texts.aggregate))
            first = last
        np.testing.assert_allclose(graph["probability"].numpy(), python_scores, atol=1e-5)
    assert mismatched_ids == 0


def test_tiny_model_export_has_its_signatures_and_metadata(tiny_model_store):
    version_dir = tiny_model_store / "sentiment" / "1"
    for name in ("saved_model.pb", "variables", "assets/vocab.txt", "assets/tokenizer.json", "metadata.json", "MODEL_CARD.md"):
        assert (version_dir / name).exists(), name
    loaded = tf.saved_model.load(str(version_dir))
    assert set(loaded.signatures) == {"serving_default", "serving_gpu", "predict_text", "explain"}
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["token_ids"].dtype == tf.int32
    probability = serve(token_ids=tf.constant([[2, 3, 4, 0], [5, 0, 0, 0]], dtype=tf.int32))["probability"]
    assert probability.dtype == tf.float32 and probability.shape == (2,)
    assert np.all((probability.numpy() >= 0) & (probability.numpy() <= 1))

    saved = [name for name, _ in tf.train.list_variables(str(version_dir / "variables" / "variables"))]
    assert any("embeddings" in name for name in saved) and not [n for n in saved if "optimizer" in n]  # weights only
    assert any("gate_tables" in name for name in saved)  # the fused graph's folded input projection

    meta = json.loads((version_dir / "metadata.json").read_text())
    for key in ("name", "version", "created_at", "dataset", "hyperparameters", "tensorflow_version", "keras_version",
                "label_names", "decision_threshold", "metrics", "training_seconds"):  # fmt: skip
        assert key in meta, key
    assert meta["name"] == "sentiment" and meta["version"] == 1
    assert meta["serving"]["signatures"] == {"cpu": "serving_default", "gpu": "serving_gpu"}
    assert meta["serving"]["max_length"] == meta["tokenizer"]["max_length"] == 48
    assert meta["serving"]["batch_buckets"][0] == 1 and meta["serving"]["batch_buckets"] == sorted(set(meta["serving"]["batch_buckets"]))
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


def test_long_texts_in_graph_are_read_in_windows_with_the_middle_cut_past_the_bound(tiny_model_store):
    version = resolve(tiny_model_store / "sentiment", 1)
    tokenizer: Tokenizer = version.load_tokenizer()
    policy = tokenizer.long_texts
    assert policy.kind == "windows" and version.metadata["long_texts"] == policy.as_metadata()
    predict_text = tf.saved_model.load(str(version.path)).signatures["predict_text"]
    words = tokenizer.vocabulary[2:]
    for n in (policy.window, policy.window + 1, policy.window * policy.max_windows, policy.window * policy.max_windows * 3 + 1):
        text = " ".join(words[i % len(words)] for i in range(n))
        out = predict_text(texts=tf.constant([text]))
        expected = tokenizer.encode(text)
        assert out["n_tokens"].numpy()[0] == expected.n_tokens == n
        assert out["windows"].numpy()[0] == len(expected.windows) == min(-(-n // policy.window), policy.max_windows)
        assert expected.truncated == (n > policy.window * policy.max_windows)
        assert out["token_ids"].numpy()[0].tolist() == [t for w in expected.windows for t in w]


def test_head_tail_policy_in_graph(tiny_model_store, tmp_path):
    """A version exported with the old policy reads the first and last tokens only, in the graph as in Python."""
    import shutil

    from training.reexport import main as reexport

    store = tmp_path / "sentiment"
    shutil.copytree(tiny_model_store / "sentiment" / "1", store / "1")
    assert reexport([str(store / "1"), "--long-texts", "head_tail"]) == 0
    version = resolve(store, 2)
    tokenizer = version.load_tokenizer()
    assert tokenizer.long_texts.kind == "head_tail" and version.metadata["long_texts"]["kind"] == "head_tail"
    predict_text = tf.saved_model.load(str(version.path)).signatures["predict_text"]
    words = tokenizer.vocabulary[2:]
    text = " ".join(words[i % len(words)] for i in range(tokenizer.max_length * 3))
    out = predict_text(texts=tf.constant([text]))
    expected = tokenizer.encode(text)
    assert expected.truncated and out["n_tokens"].numpy()[0] == tokenizer.max_length * 3 and out["windows"].numpy()[0] == 1
    assert out["token_ids"].numpy()[0].tolist() == expected.ids


def test_reexport_writes_the_next_version_with_the_same_weights_and_metadata(tiny_model_store, tmp_path, capsys):
    import shutil

    from training.reexport import main as reexport

    store = tmp_path / "sentiment"
    shutil.copytree(tiny_model_store / "sentiment" / "1", store / "1")
    assert reexport([str(store / "1")]) == 0
    old, new = resolve(store, 1), resolve(store, 2)
    assert new.metadata["exported_from"]["version"] == 1 and new.metadata["version"] == 2
    for key in ("metrics", "dataset", "architecture", "tokenizer", "hyperparameters", "probes", "serving", "long_texts"):
        assert new.metadata[key] == old.metadata[key], key
    assert "## Provenance" in (new.path / "MODEL_CARD.md").read_text()
    ids = tf.constant([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0], [11, 12, 13, 14, 15]], dtype=tf.int32)
    scores = [tf.saved_model.load(str(v.path)).signatures["serving_default"](token_ids=ids)["probability"].numpy() for v in (old, new)]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-6)

    with pytest.raises(SystemExit) as exit_status:
        reexport([str(store / "7")])
    assert exit_status.value.code == 2 and "not a complete SavedModel" in capsys.readouterr().err


def test_evaluate_scores_the_first_and_last_sentences_of_reviews_alone(tiny_model_store, tmp_path):
    """``python -m training.evaluate --sentences``: each review's edge sentences scored on their own, by the version."""
    import json
    import random
    import re
    import subprocess
    import sys

    from tests import synthetic

    rng = random.Random(5)
    ends = re.compile(r"(\.|!|\s*<br /><br />)+$")  # each synthetic review made one sentence, then two joined
    for polarity in ("pos", "neg"):
        folder = tmp_path / "aclImdb" / "test" / polarity
        folder.mkdir(parents=True)
        for i in range(40):
            two = [ends.sub("", synthetic.review(rng, polarity == "pos", length=12)) + "." for _ in range(2)]
            (folder / f"{i}_{8 if polarity == 'pos' else 2}.txt").write_text(" ".join(two), encoding="utf-8")
    (tmp_path / "aclImdb" / "train").mkdir()
    command = [sys.executable, "-m", "training.evaluate", "--model", str(tiny_model_store / "sentiment" / "1"), "--data", str(tmp_path)]
    result = subprocess.run([*command, "--sentences"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for which in ("first", "last"):
        assert report["sentences"][which]["n"] == 80
        assert report["sentences"][which]["accuracy"] >= 0.9, report["sentences"]
