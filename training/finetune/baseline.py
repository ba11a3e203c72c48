"""The linear model the network must beat, and the teacher it learns from.

TF-IDF of word uni- and bigrams (the tokenizer's words) and of character 2-5-grams
inside word boundaries (which read hashtags, handles, misspellings and words
the network's vocabulary lacks), then multinomial logistic regression with
balanced class weights. Its regularisation ``C`` is chosen on the validation
split. The same model, fitted on the other folds of the training split, gives
every training text probabilities it did not see the label of
(`out_of_fold`): the soft targets of distillation, as honest as the teacher's
probabilities on new texts.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from service.tokenizer import split_words
from training.finetune.scores import macro_f1

log = logging.getLogger(__name__)

C_GRID = (1.0, 3.0, 10.0)


class Features:
    """Word 1-2-gram and character 2-5-gram TF-IDF, fitted once on the training texts."""

    def __init__(self, texts: list[str]):
        self.words = TfidfVectorizer(
            tokenizer=split_words, lowercase=False, token_pattern=None, ngram_range=(1, 2), min_df=2, sublinear_tf=True
        )
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, lowercase=True)
        self.train = sparse.hstack([self.words.fit_transform(texts), self.chars.fit_transform(texts)]).tocsr()

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        return sparse.hstack([self.words.transform(texts), self.chars.transform(texts)]).tocsr()


class LinearBaseline:
    """Logistic regression on `Features`; ``predict_proba`` gives ``[n, k]`` in label order."""

    def __init__(self, features: Features, c: float, classifier: LogisticRegression):
        self.features, self.c, self.classifier = features, c, classifier

    @property
    def description(self) -> str:
        return f"TF-IDF word 1-2-grams + char 2-5-grams, logistic regression (C={self.c:g}, balanced class weights)"

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.classifier.predict_proba(self.features.transform(texts))


def _fit(x, y: np.ndarray, c: float, weights: np.ndarray | None) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x, y, sample_weight=weights)


def fit_baseline(
    train_texts: list[str],
    train_y: np.ndarray,
    validation_texts: list[str],
    validation_y: np.ndarray,
    weights: np.ndarray | None = None,
    grid: tuple[float, ...] = C_GRID,
) -> tuple[LinearBaseline, dict]:
    """The baseline with the ``C`` of ``grid`` that scores the best validation macro-F1, and each candidate's score."""
    started = time.perf_counter()
    features = Features(train_texts)
    x_validation = features.transform(validation_texts)
    scores, best = {}, None
    for c in grid:
        classifier = _fit(features.train, train_y, c, weights)
        score = macro_f1(validation_y, classifier.predict_proba(x_validation), classifier.classes_.size)
        scores[f"{c:g}"] = round(score, 4)
        if best is None or score > best[0]:
            best = (score, c, classifier)
    log.info("linear baseline: validation macro-F1 by C %s (%.0f s)", scores, time.perf_counter() - started)
    return LinearBaseline(features, best[1], best[2]), {
        "validation_macro_f1_by_c": scores,
        "seconds": round(time.perf_counter() - started, 1),
    }


def out_of_fold(
    baseline: LinearBaseline, train_y: np.ndarray, weights: np.ndarray | None = None, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Each training text's probabilities ``[n, k]`` from the baseline fitted on the other ``folds - 1`` folds.

    (The features' vocabulary and IDF come from the whole training split: unlabelled statistics, no label leaks.)"""
    classes = int(train_y.max()) + 1
    out = np.zeros((len(train_y), classes))
    smallest = np.bincount(train_y, minlength=classes).min()
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(train_y)), train_y):
        fold_weights = None if weights is None else weights[fit_rows]
        classifier = _fit(baseline.features.train[fit_rows], train_y[fit_rows], baseline.c, fold_weights)
        out[np.ix_(held_rows, classifier.classes_)] = classifier.predict_proba(baseline.features.train[held_rows])
    return out
