"""How a model version's outputs become a text's label, its score and the scores of every label.

A two-label version (a sigmoid head) answers one probability per sequence,
that of its second label (``positive``): a text read in several windows gets
them combined by the version's long-text aggregate, its label by the decision
threshold, and its ``score`` stays P(positive), as it always was. A k-label
version (softmax) answers k probabilities per sequence, in the order of its
labels: a text's windows are combined by the mean of their log-probabilities
(which, under a softmax, is the mean of their logits: the same policy as the
two-label mean logit), its label is the likeliest one and its ``score`` that
label's probability. ``scores`` holds every label's probability either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.model_store import ModelVersion
from service.tokenizer import combine


@dataclass(frozen=True)
class Read:
    """One text's reading: its label, score, every label's probability, and the index of the output explained."""

    label: str
    score: float
    scores: dict[str, float]
    explained: int  # which of the k outputs an explanation splits (a two-label model's one output: 0)


class LabelReader:
    """Reads the windows' outputs of one version."""

    def __init__(self, model: ModelVersion, aggregate: str):
        self.labels = model.labels
        self.classes = model.classes
        self.threshold = model.threshold
        self.aggregate = aggregate

    def read(self, windows: Sequence[Sequence[float]], lengths: Sequence[int]) -> Read:
        """``windows``: each window's outputs (1 value, or k), in order; ``lengths``: their tokens."""
        if self.classes == 1:
            negative, positive = self.labels
            p = combine([w[0] for w in windows], lengths, self.aggregate)
            return Read(positive if p >= self.threshold else negative, p, {negative: 1 - p, positive: p}, 0)
        if len(windows) == 1:
            probabilities = [float(v) for v in windows[0]]
        else:
            means = [math.fsum(math.log(max(w[c], 1e-12)) for w in windows) / len(windows) for c in range(self.classes)]
            top = max(means)
            exps = [math.exp(m - top) for m in means]
            probabilities = [e / math.fsum(exps) for e in exps]
        chosen = max(range(self.classes), key=probabilities.__getitem__)
        return Read(self.labels[chosen], probabilities[chosen], dict(zip(self.labels, probabilities, strict=True)), chosen)
