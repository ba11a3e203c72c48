"""Metrics of k-label predictions, and how sure a difference between two models is.

Predictions are probabilities ``[n, k]`` in label order (two labels included:
``[1 - p, p]``); the predicted label is the likeliest. Differences between two
models scored on the same texts get a paired bootstrap confidence interval
(texts resampled with replacement, both models' predictions kept together).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support


def as_matrix(probabilities: np.ndarray) -> np.ndarray:
    """``[n]`` P(second label) → ``[n, 2]``; ``[n, k]`` as is."""
    p = np.asarray(probabilities, dtype="float64")
    return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p


def macro_f1(y, probabilities, classes: int | None = None) -> float:
    p = as_matrix(probabilities)
    return float(f1_score(y, p.argmax(1), labels=list(range(classes or p.shape[1])), average="macro", zero_division=0))


def expected_calibration_error(y, probabilities, bins: int = 15) -> float:
    """Mean |accuracy − confidence| of the predicted label over equal-width confidence bins, weighted by bin size."""
    rows = reliability(y, probabilities, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]))


def reliability(y, probabilities, bins: int = 10) -> list[dict]:
    """Per confidence bin (of the predicted label's probability, from 1/k to 1): how many, mean confidence, accuracy."""
    p = as_matrix(probabilities)
    y = np.asarray(y)
    confidence, right = p.max(1), p.argmax(1) == y
    edges = np.linspace(1 / p.shape[1], 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else None,
                "accuracy": float(right[members].mean()) if members.any() else None,
            }
        )
    return rows


def classification_report(y, probabilities, labels: list[str]) -> dict:
    """Accuracy, macro-F1, log loss, ECE, the confusion matrix (rows: true label) and per-label precision/recall/F1."""
    p = as_matrix(probabilities)
    y = np.asarray(y)
    k = len(labels)
    predicted = p.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=list(range(k)), zero_division=0)
    return {
        "n": len(y),
        "accuracy": round(float((predicted == y).mean()), 4),
        "macro_f1": round(macro_f1(y, p, k), 4),
        "log_loss": round(float(log_loss(y, _clipped(p), labels=list(range(k)))), 4),
        "ece": round(expected_calibration_error(y, p), 4),
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "n": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": confusion_matrix(y, predicted, labels=list(range(k))).tolist(),
    }


def _clipped(p: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 (a log loss of a confident mistake stays finite), rows summing to 1 again."""
    p = np.clip(p, 1e-7, 1)
    return p / p.sum(axis=1, keepdims=True)


def paired_bootstrap(y, predicted_a, predicted_b, metric: str, classes: int, rounds: int = 2000, seed: int = 0) -> dict:
    """``metric`` ("accuracy" or "macro_f1") of A minus that of B on the same texts, with a 95 % percentile interval."""
    y, a, b = np.asarray(y), np.asarray(predicted_a), np.asarray(predicted_b)

    def score(truth, guess):
        if metric == "accuracy":
            return float((truth == guess).mean())
        # sklearn's macro-F1 (zero_division=0) from the confusion counts: 2000 resamples in well under a second
        counts = np.bincount(truth * classes + guess, minlength=classes * classes).reshape(classes, classes)
        hits = np.diag(counts)
        denominator = counts.sum(axis=0) + counts.sum(axis=1)
        return float(np.mean(np.divide(2 * hits, denominator, out=np.zeros(classes), where=denominator > 0)))

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        rows = rng.integers(0, len(y), len(y))
        samples.append(score(y[rows], a[rows]) - score(y[rows], b[rows]))
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": round(score(y, a) - score(y, b), 4), "low": round(float(low), 4), "high": round(float(high), 4), "rounds": rounds}
