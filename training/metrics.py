"""Classification and calibration metrics, and the linear baseline to beat."""

from __future__ import annotations

import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from service.tokenizer import split_words


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = np.maximum(probabilities, 1 - probabilities)
    correct = (probabilities >= 0.5) == (labels == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def classification_metrics(labels, probabilities, threshold: float = 0.5) -> dict[str, float]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype="float64")
    predicted = (probabilities >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "n": len(labels),
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "roc_auc": round(float(roc_auc_score(labels, probabilities)), 4) if both_classes else None,
        "f1": round(float(f1_score(labels, predicted, zero_division=0)), 4),
        "log_loss": round(float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1])), 4),
        "ece": round(expected_calibration_error(labels, probabilities), 4),
    }


def linear_baseline(train_texts, train_labels, test_texts, test_labels) -> dict[str, float]:
    """TF-IDF word uni+bigrams → logistic regression, on the same tokens as the LSTM."""
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(
        tokenizer=split_words, lowercase=False, token_pattern=None, ngram_range=(1, 2), min_df=2, sublinear_tf=True
    )
    classifier = LogisticRegression(C=8.0, max_iter=1000)
    classifier.fit(vectorizer.fit_transform(train_texts), train_labels)
    probabilities = classifier.predict_proba(vectorizer.transform(test_texts))[:, 1]
    result = classification_metrics(test_labels, probabilities)
    result["train_seconds"] = round(time.perf_counter() - start, 1)
    return result
