"""Temperature scaling (`training.calibration`)."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import expected_calibration_error

keras = pytest.importorskip("keras")

from training.calibration import apply_temperature, fit_temperature, logits_of  # noqa: E402
from training.model import Architecture, build_model  # noqa: E402


def overconfident(n: int, stretch: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), reported as sigmoid(stretch * z): calibrated by T = stretch exactly."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-stretch * z))


@pytest.mark.parametrize("stretch", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_undoes_a_known_stretch(stretch):
    labels, probabilities = overconfident(50_000, stretch)
    assert fit_temperature(labels, probabilities) == pytest.approx(stretch, rel=0.05)


def test_calibration_lowers_the_error_and_flips_no_decision():
    labels, probabilities = overconfident(20_000, 2.0, seed=1)
    t = fit_temperature(labels, probabilities)
    calibrated = 1 / (1 + np.exp(-logits_of(probabilities) / t))
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(labels, probabilities) / 3
    assert np.array_equal(calibrated >= 0.5, probabilities >= 0.5)


def test_the_temperature_is_folded_into_the_output_layer():
    keras.utils.set_random_seed(0)
    model = build_model(Architecture(30, 8, 4, pooling="mean"))
    ids = np.random.default_rng(0).integers(1, 30, size=(8, 12)).astype("int32")
    before = model.predict(ids, verbose=0).reshape(-1)
    apply_temperature(model, 2.0)
    after = model.predict(ids, verbose=0).reshape(-1)
    np.testing.assert_allclose(logits_of(after), logits_of(before) / 2.0, rtol=1e-4, atol=1e-5)
