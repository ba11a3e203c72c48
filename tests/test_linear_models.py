"""The linear models beside the LSTM: the bigram baseline and the naive Bayes-weighted teacher."""

from __future__ import annotations

import random

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from tests import synthetic
from training.metrics import LinearModel, expected_calibration_error, naive_bayes_ratios


def test_naive_bayes_ratios_sign_follows_the_class_a_word_appears_in() -> None:
    texts = ["good fine", "good plot", "bad plot", "bad awful"]
    labels = np.array([1, 1, 0, 0])
    vectorizer = CountVectorizer()
    ratios = naive_bayes_ratios(vectorizer.fit_transform(texts), labels).diagonal()
    weight = dict(zip(vectorizer.get_feature_names_out(), ratios, strict=True))
    assert weight["good"] > weight["fine"] > 0 > weight["awful"] > weight["bad"]
    assert weight["plot"] == 0


def test_both_linear_models_learn_a_synthetic_task() -> None:
    rng = random.Random(0)
    labels = [i % 2 for i in range(400)]
    texts = [synthetic.review(rng, bool(label)) for label in labels]
    held_out_labels = [i % 2 for i in range(200)]
    held_out = [synthetic.review(rng, bool(label)) for label in held_out_labels]
    for model in (LinearModel(texts, labels), LinearModel.teacher(texts, labels)):
        assert model.evaluate(held_out, held_out_labels)["accuracy"] >= 0.9


def test_expected_calibration_error() -> None:
    labels = np.array([1, 1, 0, 0])
    assert expected_calibration_error(labels, np.array([1.0, 1.0, 0.0, 0.0])) == 0.0
    # Always 90 % sure, right half of the time: off by 0.4.
    assert abs(expected_calibration_error(labels, np.array([0.9, 0.1, 0.9, 0.1])) - 0.4) < 1e-9
