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


class LinearModel:
    """TF-IDF word uni+bigrams → logistic regression, on the same tokens as the LSTM.

    The baseline the LSTM must beat, and the teacher that labels unlabelled
    reviews for it (``--distill``).
    """

    def __init__(self, texts: list[str], labels: list[int]):
        started = time.perf_counter()
        self.vectorizer = TfidfVectorizer(
            tokenizer=split_words, lowercase=False, token_pattern=None, ngram_range=(1, 2), min_df=2, sublinear_tf=True
        )
        self.classifier = LogisticRegression(C=8.0, max_iter=1000)
        self.classifier.fit(self.vectorizer.fit_transform(texts), labels)
        self.train_seconds = round(time.perf_counter() - started, 1)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.classifier.predict_proba(self.vectorizer.transform(texts))[:, 1]

    def evaluate(self, texts: list[str], labels: list[int]) -> dict:
        return {**classification_metrics(labels, self.predict_proba(texts)), "train_seconds": self.train_seconds}


def linear_baseline(train_texts, train_labels, test_texts, test_labels) -> dict:
    return LinearModel(train_texts, train_labels).evaluate(test_texts, test_labels)
