"""Scoring texts as the exported version will, and everything the report says about the scores.

`Scorer` reads texts the way the version serves them (the tokenizer's
long-text policy: windows combined by their mean logit), from the Keras
network, so that validation choices and test metrics measure what is served.
`compare` puts the new model, the linear baseline and the base model side by
side on the same test texts, with paired bootstrap intervals on the
differences and the verdict.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from service.tokenizer import Tokenizer
from training.finetune import scores
from training.model import pad


def batched(score: Callable[[np.ndarray], np.ndarray], sequences: list[list[int]], batch_size: int = 256) -> np.ndarray:
    """``score`` of every sequence, in length-sorted batches (little padding), back in the sequences' order."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        values = np.asarray(score(pad([sequences[i] for i in members])))
        if out is None:
            out = np.zeros((len(sequences), *values.shape[1:]), dtype="float64")
        out[members] = values
    return out


class Scorer:
    """Texts → logits ``[n, k]`` (k = 1 for a sigmoid head) and probabilities ``[n, k]`` in label order (two labels: ``[n, 2]``)."""

    def __init__(self, logits_model, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.logits = tf.function(lambda ids: logits_model(ids, training=False), input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def sequences(self, sequences: list[list[int]]) -> np.ndarray:
        return batched(lambda ids: self.logits(tf.constant(ids)).numpy(), sequences)

    def texts(self, texts: list[str]) -> np.ndarray:
        """Probabilities ``[n, k]``: each text's windows' logits averaged (mean logit), then softmax (or sigmoid)."""
        encoded = self.tokenizer.encode_batch(texts)
        logits = self.sequences([w for e in encoded for w in e.windows])
        owners = np.repeat(np.arange(len(encoded)), [len(e.windows) for e in encoded])
        mean = np.zeros((len(encoded), logits.shape[1]))
        np.add.at(mean, owners, logits)
        mean /= np.bincount(owners, minlength=len(encoded))[:, None]
        return probabilities_of(mean)


def probabilities_of(logits: np.ndarray) -> np.ndarray:
    """Logits ``[n, 1]`` → ``[n, 2]`` (sigmoid); ``[n, k]`` → softmax."""
    if logits.shape[1] == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def length_bands(n_tokens: np.ndarray, bands: int = 4) -> list[tuple[int, int]]:
    """Up to ``bands`` token-count ranges holding similar numbers of texts."""
    edges = sorted({int(e) for e in np.quantile(n_tokens, np.linspace(0, 1, bands + 1))})
    if len(edges) == 1:
        return [(edges[0], edges[0])]
    return [(edges[0], edges[1]), *((a + 1, b) for a, b in itertools.pairwise(edges[1:]))]


def by_length(y: np.ndarray, predictions: dict[str, np.ndarray | None], n_tokens: np.ndarray) -> list[dict]:
    """Accuracy of each model's predicted labels (None: not applicable) per `length_bands` band."""
    rows = []
    for lo, hi in length_bands(n_tokens):
        members = (n_tokens >= lo) & (n_tokens <= hi)
        row = {"band": f"{lo}-{hi}", "n": int(members.sum())}
        for name, predicted in predictions.items():
            row[name] = round(float((predicted[members] == y[members]).mean()), 4) if predicted is not None and members.any() else None
        rows.append(row)
    return rows


def verdict(difference: dict, what: str) -> str:
    """'better', 'worse' or 'no clear difference', by the 95 % interval of ``difference``."""
    if difference["low"] > 0:
        return f"better than {what}"
    if difference["high"] < 0:
        return f"worse than {what}"
    return f"no clear difference from {what}"


def base_comparison(y: np.ndarray, model_p: np.ndarray, base_positive: np.ndarray, labels: list[str], base_labels: list[str]) -> dict:
    """The base model's two labels against the new model on the same test texts.

    Two labels: the whole test split, the base's P(positive) read as P(second label). More: the texts whose
    label is one of the base's two (by name); the base picks between them, the new model among all of its
    labels (so its other labels count against it), and, for reference, between the same two."""
    if len(labels) == 2:
        members, pair = np.ones(len(y), dtype=bool), [0, 1]
        note = f"all test texts; the base's {base_labels[1]!r} read as {labels[1]!r}"
    elif set(base_labels) <= set(labels):
        pair = [labels.index(name) for name in base_labels]
        members = np.isin(y, pair)
        note = f"the test texts labelled {base_labels[0]!r} or {base_labels[1]!r}; the base model knows no other label"
    else:
        return {"applicable": False, "note": f"the data's labels {labels} do not include the base's {base_labels}"}
    truth = y[members]
    base_predicted = np.where(base_positive[members] >= 0.5, pair[1], pair[0])
    model_predicted = model_p[members].argmax(1)
    between = np.where(model_p[members][:, pair[1]] >= model_p[members][:, pair[0]], pair[1], pair[0])
    k = len(labels)
    accuracy = scores.paired_bootstrap(truth, model_predicted, base_predicted, "accuracy", k)
    result = {
        "applicable": True,
        "note": note,
        "n": int(members.sum()),
        "base_accuracy": round(float((base_predicted == truth).mean()), 4),
        "model_accuracy": round(float((model_predicted == truth).mean()), 4),
        "model_accuracy_between_the_two": round(float((between == truth).mean()), 4),
        "accuracy_difference": accuracy,
        "verdict": verdict(accuracy, "the base model"),
    }
    if len(labels) == 2:
        result["macro_f1_difference"] = scores.paired_bootstrap(truth, model_predicted, base_predicted, "macro_f1", k)
    return result


def baseline_comparison(y: np.ndarray, model_p: np.ndarray, baseline_p: np.ndarray, k: int, target: float = 0.01) -> dict:
    """The new model against the linear baseline on the test split: differences, intervals, and whether both
    accuracy and macro-F1 are at least ``target`` higher."""
    a, b = model_p.argmax(1), baseline_p.argmax(1)
    accuracy = scores.paired_bootstrap(y, a, b, "accuracy", k)
    macro_f1 = scores.paired_bootstrap(y, a, b, "macro_f1", k)
    return {
        "accuracy_difference": accuracy,
        "macro_f1_difference": macro_f1,
        "target": target,
        "target_met": accuracy["difference"] >= target and macro_f1["difference"] >= target,
        "verdict": verdict(accuracy, "the linear baseline") + " in accuracy; " + verdict(macro_f1, "it") + " in macro-F1",
    }
