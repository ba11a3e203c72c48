"""Language-model pre-training of the BiLSTM (`training.language_model`) on a toy language, in seconds."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training.language_model import chunks, pretrain  # noqa: E402
from training.model import Architecture, build_model  # noqa: E402


def test_runs_overlap_by_one_word_so_every_word_but_the_first_is_a_target():
    assert chunks([[1, 2, 3, 4, 5, 6, 7], [8], [9, 10]], 3) == [[1, 2, 3, 4], [4, 5, 6, 7], [9, 10]]
    targets = [word for run in chunks([list(range(1, 31))], 7) for word in run[1:]]
    assert targets == list(range(2, 31))


def counting_texts(n: int, seed: int = 0) -> list[list[int]]:
    """Texts of a language where each word is the one after the previous (ids 2..49, wrapping): both the next word and
    the previous one are certain, so both directions can learn it to a loss near 0."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        first, length = int(rng.integers(2, 50)), int(rng.integers(5, 60))
        texts.append([2 + (first - 2 + i) % 48 for i in range(length)])
    return texts


def test_both_directions_learn_the_language_and_their_weights_go_into_the_classifier():
    embedding = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    reader = pretrain(counting_texts(400), 50, embedding, 8, epochs=15, seed=0, batch_size=32, length=20, sampled=10, learning_rate=0.02)
    # A direction that read padding as words, or the backward LSTM given the text unreversed, would stay far above 1.
    assert reader.sampled_loss < 0.2, reader.sampled_loss
    assert not np.allclose(reader.embedding, embedding)  # the embedding trained with the LSTMs
    classifier = build_model(Architecture(50, 8, 8, pooling="mean"))
    reader.load_into(classifier)
    np.testing.assert_array_equal(classifier.get_layer("embedding").get_weights()[0], reader.embedding)
    bilstm = classifier.get_layer("bilstm")
    for layer, weights in ((bilstm.forward_layer, reader.forward), (bilstm.backward_layer, reader.backward)):
        for got, want in zip(layer.get_weights(), weights, strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.allclose(reader.forward[0], reader.backward[0])  # two models, not one copied
