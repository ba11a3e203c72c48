"""``python -m training.finetune`` end to end on synthetic texts, from the tiny base model: 3 labels and 2.

Checks the export contract the service relies on (signatures, outputs, shapes,
``metadata.json``), that the k-label serving graph computes its Keras network
and the explain signature its gradient × input per class, and the report.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from service.model_store import resolve
from service.tokenizer import Tokenizer
from tests.synthetic import FILLER, NEGATIVE, POSITIVE

tf = pytest.importorskip("tensorflow")

NEUTRAL = ["announced", "schedule", "update", "report", "today", "weather", "released", "statement", "@acmeair", "#travel"]
# Words the tiny base model has never seen: the flow must add them to the vocabulary.
NEW_POSITIVE, NEW_NEGATIVE = ["yay", "thx", "luv"], ["ugh", "smh", "delayed"]
# 10 epochs: the embedding stays frozen for the first (Recipe.freeze_embedding_epochs), and the new words must still be learnt.
ARGS = ["--epochs", "10", "--patience", "3", "--batch-size", "16", "--learning-rate", "0.01", "--body-learning-rate", "0.005"]


def tweet(rng: random.Random, label: str) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 12))]
    cue = {"positive": POSITIVE + NEW_POSITIVE, "negative": NEGATIVE + NEW_NEGATIVE, "neutral": NEUTRAL}[label]
    for _ in range(2):
        words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
    return rng.choice(["@acmeair ", "", "RT @x: "]) + " ".join(words) + rng.choice(["", "!", " http://t.co/" + str(rng.randint(0, 99))])


def write_data(path, labels, per_label=130, seed=0):
    rng = random.Random(seed)
    rows = [{"text": tweet(rng, label), "label": label} for label in labels for _ in range(per_label)]
    for row in rows[::12]:  # some labels wrong, as with real labellers: the report has errors to show
        row["label"] = rng.choice([label for label in labels if label != row["label"]])
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def finetune(tmp_path_factory, tiny_model_store, labels) -> tuple:
    from training.finetune.__main__ import main

    root = tmp_path_factory.mktemp("finetune")
    data = write_data(root / "texts.jsonl", labels)
    store = root / "store"
    base = str(tiny_model_store / "sentiment")
    assert main(["--data", str(data), "--name", "mine", "--model-store", str(store), "--base", base, *ARGS]) == 0
    return resolve(store / "mine", 1), resolve(tiny_model_store / "sentiment", 1)


@pytest.fixture(scope="module")
def three(tiny_two_models):
    """The three-label version the session's store already holds (tests/conftest.py), fine-tuned by this flow."""
    return resolve(tiny_two_models / "tweets", 1), resolve(tiny_two_models / "sentiment", 1)


@pytest.fixture(scope="module")
def two(tmp_path_factory, tiny_model_store):
    return finetune(tmp_path_factory, tiny_model_store, ["negative", "positive"])


def keras_model(version):
    from training.reexport import restore_keras_model

    return restore_keras_model(version)


def random_ids(vocab_size: int, rows: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, width), np.int32)
    for row, length in enumerate(rng.integers(1, width + 1, size=rows)):
        ids[row, :length] = rng.integers(1, vocab_size, size=length)
    return ids


def test_three_labels_metadata_follows_the_contract(three):
    version, base = three
    meta = version.metadata
    assert meta["labels"] == ["negative", "neutral", "positive"] and meta["head"] == {"kind": "softmax", "classes": 3}
    assert "label_names" not in meta and "decision_threshold" not in meta
    assert meta["base"] == {"name": "sentiment", "version": 1}
    data = meta["data"]
    assert len(data["sha256"]) == 64 and data["rows"] == 390
    assert {"duplicates_removed", "conflicts_removed", "cross_split_removed"} <= set(data)
    assert sum(data["splits"].values()) == 390 - data["duplicates_removed"] - data["conflicts_removed"] - data["cross_split_removed"]
    for split in ("validation", "test"):
        assert {"accuracy", "macro_f1", "per_class", "confusion", "ece"} <= set(meta["metrics"][split])
        assert {"accuracy", "macro_f1"} <= set(meta["baseline"][split])
    assert meta["serving"]["signatures"] == {"cpu": "serving_default", "gpu": "serving_gpu"}
    assert meta["serving"]["explain_signature"] == "explain" and meta["serving"]["batch_buckets"][0] == 1
    assert meta["long_texts"] == base.metadata["long_texts"]
    outputs = meta["signature_defs"]["serving_default"]["outputs"]
    assert set(outputs) == {"probabilities", "logits"} and outputs["probabilities"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in outputs["probabilities"]["tensor_shape"]["dim"]] == ["-1", "3"]
    assert meta["signature_defs"]["predict_text"]["outputs"]["label"]["dtype"] == "DT_STRING"
    # The synthetic cues are easy: a model that learned nothing sits near 1/3.
    assert meta["metrics"]["test"]["accuracy"] >= 0.8 and meta["metrics"]["test"]["macro_f1"] >= 0.8


def test_the_vocabulary_is_the_bases_with_new_words_appended(three):
    version, base = three
    vocabulary = (version.path / "assets" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    base_vocabulary = (base.path / "assets" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocabulary[: len(base_vocabulary)] == base_vocabulary
    assert {"yay", "ugh", "announced", "acmeair"} <= set(vocabulary[len(base_vocabulary) :])
    assert version.metadata["vocab_size"] == len(vocabulary) == Tokenizer.load(version.path / "assets").vocab_size
    assert version.metadata["vocabulary"]["added"] == len(vocabulary) - len(base_vocabulary)


def test_three_labels_signatures_agree_with_the_keras_network(three):
    version, _ = three
    model = keras_model(version)
    loaded = tf.saved_model.load(str(version.path))
    assert set(loaded.signatures) == {"serving_default", "serving_gpu", "predict_text", "explain"}
    width = version.metadata["serving"]["max_length"]
    for rows, seed in ((1, 1), (7, 2), (40, 3), (130, 4)):  # buckets, and past the largest (chunks)
        ids = random_ids(version.metadata["vocab_size"], rows, width, seed)
        out = loaded.signatures["serving_default"](token_ids=tf.constant(ids))
        assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (rows, 3) and out["logits"].shape == (rows, 3)
        np.testing.assert_allclose(out["probabilities"].numpy(), model(ids, training=False).numpy(), atol=1e-5)
        np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(out["logits"]).numpy(), atol=1e-6)
    wide = random_ids(version.metadata["vocab_size"], 3, width + 9, 5)  # past max_length: the loop without XLA
    served = loaded.signatures["serving_default"](token_ids=tf.constant(wide))["probabilities"].numpy()
    np.testing.assert_allclose(served, model(wide, training=False).numpy(), atol=1e-5)


def test_explain_gives_each_class_its_gradient_x_input(three):
    version, _ = three
    model = keras_model(version)
    explain = tf.saved_model.load(str(version.path)).signatures["explain"]
    embedding = model.get_layer("embedding")
    after = model.layers[model.layers.index(embedding) + 1 : model.layers.index(model.get_layer("logits")) + 1]
    rng = np.random.default_rng(0)
    for length in (1, 5, 16):
        ids = rng.integers(2, version.metadata["vocab_size"], size=length).tolist()
        out = explain(token_ids=tf.constant([[*ids, 0, 0]]))
        assert out["contributions"].shape == (1, length + 2, 3) and out["logits"].shape == (1, 3)
        vectors = embedding(tf.constant([ids]))
        for k in range(3):
            with tf.GradientTape() as tape:
                tape.watch(vectors)
                h = vectors
                for layer in after:
                    h = layer(h, training=False)
                logit = h[:, k]
            expected = tf.reduce_sum(tape.gradient(logit, vectors) * vectors, axis=-1).numpy()[0]
            np.testing.assert_allclose(out["contributions"].numpy()[0, :length, k], expected, atol=1e-4)
            np.testing.assert_allclose(out["logits"].numpy()[0, k], float(logit[0]), atol=1e-5)
        assert np.all(out["contributions"].numpy()[0, length:] == 0)


def test_predict_text_labels_and_windows(three):
    version, _ = three
    loaded = tf.saved_model.load(str(version.path))
    tokenizer = version.load_tokenizer()
    policy = tokenizer.long_texts
    words = tokenizer.vocabulary[2:]
    texts = ["yay luv this, thx @acmeair", "ugh delayed again smh", "schedule update released today"]
    texts.append(" ".join(words[i % len(words)] for i in range(policy.window * 3 - 1)))  # read in 3 windows
    out = loaded.signatures["predict_text"](texts=tf.constant(texts))
    assert set(out) == {"probabilities", "label", "token_ids", "n_tokens", "windows"}
    labels = [b.decode() for b in out["label"].numpy()]
    assert labels[:3] == ["positive", "negative", "neutral"]
    assert labels == [version.metadata["labels"][i] for i in out["probabilities"].numpy().argmax(1)]
    assert out["windows"].numpy().tolist() == [1, 1, 1, 3]
    # A long text: its windows' logits averaged, then softmax.
    windows = tokenizer.encode(texts[3]).windows
    ids = np.zeros((3, max(map(len, windows))), np.int32)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = window
    logits = loaded.signatures["serving_default"](token_ids=tf.constant(ids))["logits"].numpy()
    np.testing.assert_allclose(out["probabilities"].numpy()[3], tf.nn.softmax(logits.mean(0)).numpy(), atol=1e-5)


def test_the_report_has_its_sections_figures_and_verdict(three):
    version, _ = three
    page = (version.path / "report.html").read_text(encoding="utf-8")
    for section in ("Per label", "Confusion matrices", "Reliability", "Accuracy by text length", "The 20 worst errors", "Verdict"):
        assert f"<h2>{section}</h2>" in page, section
    assert re.search(r"class=\"verdict[^\"]*\">(<b>)?(Better|Not better) than the base model", page)
    assert "linear baseline" in page and "95 % CI" in page
    assert not re.search(r"(src|href)=\"(https?:|//|[^d#])", page), "the report must not load anything"
    for png in ("confusion.png", "reliability.png", "length.png", "per_class.png", "training.png"):
        assert (version.path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert page.count("data:image/png;base64,") == 5
    errors = page.split("<h2>The 20 worst errors</h2>")[1]
    assert "title=" in errors  # words carry their weight
    assert (version.path / "MODEL_CARD.md").read_text(encoding="utf-8").count("|") > 20
    assert not [p for p in version.path.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_two_labels_keep_the_binary_outputs(two):
    version, _ = two
    meta = version.metadata
    assert meta["labels"] == meta["label_names"] == ["negative", "positive"] and meta["decision_threshold"] == 0.5
    assert meta["head"] == {"kind": "sigmoid", "classes": 2}
    loaded = tf.saved_model.load(str(version.path))
    ids = random_ids(meta["vocab_size"], 9, 20)
    out = loaded.signatures["serving_default"](token_ids=tf.constant(ids))
    assert set(out) == {"probability"} and out["probability"].shape == (9,)
    np.testing.assert_allclose(out["probability"].numpy(), keras_model(version)(ids, training=False).numpy()[:, 0], atol=1e-5)
    explained = loaded.signatures["explain"](token_ids=tf.constant(ids))
    assert set(explained) == {"probability", "logit", "contributions"} and explained["contributions"].shape == (9, 20)
    text = loaded.signatures["predict_text"](texts=tf.constant(["yay luv it", "ugh smh"]))
    assert set(text) == {"probability", "token_ids", "n_tokens", "windows"}
    assert text["probability"].numpy()[0] > 0.5 > text["probability"].numpy()[1]
    assert meta["comparison"]["base"]["applicable"] and "macro_f1_difference" in meta["comparison"]["base"]


def test_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_model_store, capsys):
    from training.finetune.__main__ import main

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,positive\n,negative\n", encoding="utf-8")
    store = tmp_path / "store"
    base = str(tiny_model_store / "sentiment")
    assert main(["--data", str(bad), "--name", "mine", "--model-store", str(store), "--base", base]) == 2
    assert "bad.csv:3: empty text" in capsys.readouterr().err
    assert not store.exists() or not any(store.rglob("*"))
    assert main(["--data", str(bad), "--name", "mine", "--model-store", str(store), "--base", str(tmp_path / "none")]) == 2
