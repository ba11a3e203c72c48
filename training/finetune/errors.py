"""The test texts the model got most wrong, each word weighed by the exported ``explain`` signature.

The weights come from the version being written (its SavedModel, loaded as a
server loads it), so the report shows what a caller asking for an explanation
would get: each read token's gradient × input for the logit of the predicted
label (two labels: the one logit, its sign turned towards the predicted label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from service.tokenizer import Tokenizer, split_words_with_spans


def worst(y: np.ndarray, probabilities: np.ndarray, count: int = 20) -> list[int]:
    """Indices of the wrong predictions with the least probability on the true label, worst first."""
    wrong = np.flatnonzero(probabilities.argmax(1) != y)
    return wrong[np.argsort(probabilities[wrong, y[wrong]], kind="stable")][:count].tolist()


def explain_errors(
    version_dir: Path, tokenizer: Tokenizer, texts: list[str], y: np.ndarray, probabilities: np.ndarray, labels: list[str], lines: list[int]
) -> list[dict]:
    """`worst` errors with their words' weights for the predicted label, from ``version_dir``'s ``explain`` signature."""
    explain = tf.saved_model.load(str(version_dir)).signatures["explain"]
    out = []
    for i in worst(y, probabilities):
        predicted = int(probabilities[i].argmax())
        encoded = tokenizer.encode(texts[i])
        weights: list[float] = []
        for window in encoded.windows:
            contributions = explain(token_ids=tf.constant([window], tf.int32))["contributions"].numpy()[0]
            if contributions.ndim == 2:  # [time, k]: the predicted label's logit
                weights += contributions[:, predicted].tolist()
            else:  # one logit, of the second label
                weights += (contributions if predicted == 1 else -contributions).tolist()
        spans = split_words_with_spans(texts[i])
        words = []
        if len(spans) == encoded.n_tokens:
            for position, weight in zip(tokenizer.read_positions(encoded.n_tokens), weights, strict=True):
                token, start, end = spans[position]
                words.append({"token": token, "start": start, "end": end, "weight": round(float(weight), 4)})
        strongest = sorted(words, key=lambda w: -abs(w["weight"]))[:3]
        out.append(
            {
                "text": texts[i],
                "line": lines[i],
                "label": labels[int(y[i])],
                "predicted": labels[predicted],
                "confidence": round(float(probabilities[i, predicted]), 4),
                "p_true": round(float(probabilities[i, y[i]]), 4),
                "words": words,
                "top_words": [{"token": w["token"], "weight": w["weight"]} for w in strongest],
            }
        )
    return out
