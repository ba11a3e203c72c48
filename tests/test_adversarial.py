"""Adversarial and virtual adversarial training (`training.adversarial`) on small networks, in seconds."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from training.adversarial import Perturbations, PerturbedTraining, _unit  # noqa: E402
from training.model import Architecture, build_model, pad  # noqa: E402

POSITIVE, NEGATIVE = 2, 3  # token ids that decide the label; 4..19 are noise


def toy_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = rng.integers(4, 20, size=int(rng.integers(3, 12))).tolist()
        words.insert(int(rng.integers(len(words) + 1)), POSITIVE if label else NEGATIVE)
        sequences.append(words)
        labels.append(label)
    return pad(sequences), np.array(labels, dtype="float32")


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_reading_word_vectors_is_the_classifier_reading_ids(pooling):
    keras.utils.set_random_seed(0)
    classifier = build_model(Architecture(20, 8, 4, pooling=pooling))
    trainer = PerturbedTraining(classifier, Perturbations(adversarial_weight=1.0))
    ids, _ = toy_data(16)
    from_ids = classifier(ids, training=False).numpy().reshape(-1)
    from_vectors = trainer.from_vectors(trainer.embedding(ids), tf.not_equal(ids, 0), training=False).numpy()
    np.testing.assert_allclose(from_vectors, from_ids, atol=1e-6)


def test_a_direction_is_scaled_per_text_and_leaves_padding_alone():
    mask = tf.constant([[True, True, False], [True, False, False]])
    unit = _unit(tf.ones([2, 3, 4]), mask).numpy()
    np.testing.assert_allclose(np.sqrt((unit**2).sum(axis=(1, 2))), [1.0, 1.0], rtol=1e-6)
    assert not unit[0, 2].any() and not unit[1, 1:].any()


def test_the_adversarial_direction_hurts_more_than_a_random_one():
    keras.utils.set_random_seed(0)
    classifier = build_model(Architecture(20, 8, 4, pooling="mean", dropout=0.0))
    trainer = PerturbedTraining(classifier, Perturbations(adversarial_weight=1.0))
    ids, labels = toy_data(64)
    mask = tf.not_equal(ids, 0)
    vectors = trainer.embedding(ids)

    def loss(v):
        p = trainer.from_vectors(v, mask, training=False)
        return float(tf.reduce_mean(keras.losses.binary_crossentropy(labels[:, None], p[:, None])))

    with tf.GradientTape() as tape:
        tape.watch(vectors)
        p = trainer.from_vectors(vectors, mask, training=False)
        clean = tf.reduce_mean(keras.losses.binary_crossentropy(labels[:, None], p[:, None]))
    worst = _unit(tape.gradient(clean, vectors), mask)
    random = _unit(tf.random.normal(tf.shape(vectors), seed=1), mask)
    assert loss(vectors + 0.5 * worst) > loss(vectors + 0.5 * random) > float(clean) - 0.05


def test_training_with_both_losses_learns_and_leaves_its_weights_in_the_classifier():
    keras.utils.set_random_seed(0)
    classifier = build_model(Architecture(20, 8, 4, pooling="mean", dropout=0.0))
    before = classifier.get_layer("embedding").embeddings.numpy().copy()
    trainer = PerturbedTraining(classifier, Perturbations(adversarial_weight=1.0, virtual_weight=1.0, epsilon=0.5))
    trainer.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    ids, labels = toy_data(512)
    history = trainer.fit(ids, labels, batch_size=32, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    test_ids, test_labels = toy_data(200, seed=1)
    predicted = classifier.predict(test_ids, verbose=0).reshape(-1) >= 0.5
    assert (predicted == test_labels.astype(bool)).mean() >= 0.95
    assert not np.allclose(classifier.get_layer("embedding").embeddings.numpy(), before)


def test_the_quick_path_runs_the_whole_recipe_on_a_sample_and_explicit_options_win(tmp_path, tiny_model_store, caplog):
    import json
    import logging
    import random

    from tests import synthetic
    from training.__main__ import QUICK
    from training.__main__ import main as train

    data = synthetic.write_imdb_folder(tmp_path / "data", per_class=150)
    unlabeled = tmp_path / "unlabeled.txt"
    rng = random.Random(2)
    unlabeled.write_text("\n".join(synthetic.review(rng, i % 2 == 0) for i in range(300)), encoding="utf-8")
    store = tmp_path / "store"
    args = ["--quick", "--data", str(data), "--unlabeled", str(unlabeled), "--out", str(store), "--limit", "240", "--max-length", "48"]
    args += ["--embedding-dim", "16", "--lstm-units", "8", "--learning-rate", "0.01", "--lm-epochs", "1", "--calibrate"]
    teacher = tiny_model_store / "sentiment" / "1"  # a second teacher beside the linear one (--teacher-model)
    args += ["--adversarial", "1", "--virtual-adversarial", "1", "--teacher-model", str(teacher)]
    with caplog.at_level(logging.INFO, logger="training"):
        assert train(args) == 0
    assert f"teacher: the linear model and {teacher}, logits averaged" in caplog.text
    meta = json.loads((store / "sentiment" / "1" / "metadata.json").read_text())
    used = meta["hyperparameters"]
    assert used["quick"] and used["limit"] == 240 and used["max_length"] == 48  # given explicitly: kept
    assert used["epochs"] == QUICK["epochs"] == meta["epochs_run"] and used["word2vec_epochs"] == QUICK["word2vec_epochs"]
    assert used["adversarial"] == used["virtual_adversarial"] == used["lm_epochs"] == 1
    assert meta["dataset"]["language_model_sampled_loss"] > 0 and 0.25 <= meta["temperature"] <= 4 and meta["temperature"] != 1
    assert meta["dataset"]["train"] + meta["dataset"]["validation"] == 240 and meta["dataset"]["test"] == 240
    assert meta["dataset"]["distilled"] == 300 and meta["dataset"]["crops"] == QUICK["crops"]  # all 300 unlabelled texts
    card = (store / "sentiment" / "1" / "MODEL_CARD.md").read_text()
    assert used["teacher_model"] == [str(teacher)] and f"exported version(s) {teacher} for" in card
    assert "pre-trained as language models" in card and "virtual adversarial (weight 1.0)" in card and "temperature" in card
