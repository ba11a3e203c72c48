"""Temperature scaling (Guo et al., ICML 2017): calibrated probabilities at no serving cost.

Why: soft targets and regularisers change how sure the network is of its
answers without changing which side of 0.5 they fall on (distillation plus
adversarial training left the movie model under-confident, ``T`` = 0.86); a
single temperature ``T``, fitted on the validation split by likelihood,
divides the logit. Dividing the output layer's weights and bias by ``T`` does the same
inside the network, so the exported graph, its explanations and its cost are
unchanged, and no decision flips (the sign of the logit stays).
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.optimize import minimize_scalar


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype="float64"), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_temperature(labels, probabilities) -> float:
    """The ``T`` in [0.25, 4] that maximises the likelihood of ``labels`` under ``sigmoid(logit / T)``."""
    logits, y = logits_of(probabilities), np.asarray(labels, dtype="float64")

    def negative_log_likelihood(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, z) - y * z))  # -log sigmoid(z) for y=1, -log(1 - sigmoid(z)) for y=0

    return float(np.exp(minimize_scalar(negative_log_likelihood, bounds=(np.log(0.25), np.log(4.0)), method="bounded").x))


def apply_temperature(classifier: keras.Model, temperature: float) -> None:
    """Divide ``classifier``'s sigmoid output layer (``probability``) kernel and bias by ``temperature``."""
    head = classifier.get_layer("probability")
    head.set_weights([w / temperature for w in head.get_weights()])
