"""The ensemble teacher of ``--teacher-model`` (`training.ensemble_teacher`): a linear model and an exported version."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tests import synthetic
from training.ensemble_teacher import mean_logit, version_probabilities


def test_the_mean_logit_of_two_models_is_the_sigmoid_of_their_average_logit():
    a, b = np.array([0.9, 0.2, 0.5]), np.array([0.5, 0.2, 0.1])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + np.exp(-(logit(a) + logit(b)) / 2))
    np.testing.assert_allclose(mean_logit(a, b), expected, rtol=1e-9)
    assert mean_logit(np.array([0.0]), np.array([1.0]))[0] == pytest.approx(0.5)  # certainties clipped, not infinite


def test_a_version_scores_texts_alike_in_any_batch_and_tells_the_classes_apart(tiny_model_store):
    rng = random.Random(5)
    texts = [synthetic.review(rng, i % 2 == 0) for i in range(40)] + ["", "<br />"]
    version = tiny_model_store / "sentiment" / "1"
    whole = version_probabilities(version, texts)
    np.testing.assert_allclose(version_probabilities(version, texts, batch_size=7), whole, atol=1e-6)
    assert whole.shape == (42,) and ((whole >= 0) & (whole <= 1)).all()
    labels = np.array([i % 2 == 0 for i in range(40)])
    assert ((whole[:40] >= 0.5) == labels).mean() >= 0.9


def test_a_teacher_that_is_not_an_exported_version_is_refused_before_training(tmp_path, capsys):
    from training.__main__ import main as train

    with pytest.raises(SystemExit) as stop:
        train(["--quick", "--data", str(tmp_path), "--unlabeled", str(tmp_path), "--teacher-model", str(tmp_path / "nowhere")])
    assert stop.value.code == 2 and "not an exported version" in capsys.readouterr().err


def test_a_teacher_without_texts_to_label_is_refused(tiny_model_store, tmp_path, capsys):
    from training.__main__ import main as train

    with pytest.raises(SystemExit) as stop:
        train(["--quick", "--data", str(tmp_path), "--teacher-model", str(tiny_model_store / "sentiment" / "1")])
    assert stop.value.code == 2 and "needs --unlabeled" in capsys.readouterr().err


def test_a_teacher_of_more_than_two_labels_is_refused():
    from service.config import ROOT
    from training.data import DataError

    with pytest.raises(DataError, match="two-label version"):
        version_probabilities(ROOT / "model_store" / "tweets" / "1", ["a text"])
