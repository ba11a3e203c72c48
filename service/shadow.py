"""Shadow traffic: a request's texts also scored by another version, its answers only compared with the real ones.

The mirrored request is queued on the shadow version's stream after the real
one, with its own key, and nobody waits for it: the result listener hands its
answer to a `ShadowComparison` whenever it comes, in whatever order the two
answers arrive. What is kept of it is what the metrics say (labels agreed or
not, the score difference), labelled by model and the two versions; nothing of
the text. It never delays or changes the caller's answer: it is dropped first
(a lower queue bound than real requests, no live worker, too many windows), and
forgotten at its deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from service import metrics


class ShadowComparison:
    """One mirrored request: the shadow's predictions and the real ones, compared when both are in."""

    def __init__(self, model: str, version: int, shadow_version: int, score: Callable[[Sequence[float]], list]):
        self.labels = (model, str(version), str(shadow_version))
        self._score = score  # the shadow's answer values → its predictions
        self._lock = threading.Lock()
        self._shadow: list | None = None
        self._primary: list | None = None
        self._over = False

    def deliver(self, outcome: Sequence[float] | Exception) -> None:
        """The shadow's answer (from the result listener), or why there is none."""
        if isinstance(outcome, Exception):
            self._end("failed")
            return
        try:
            predictions = self._score(outcome)
        except ValueError:  # an answer that does not fit the request
            self._end("failed")
            return
        with self._lock:
            self._shadow = predictions
            ready = self._primary is not None
        if ready:
            self._compare()

    def primary(self, predictions: list) -> None:
        """The answer the caller got."""
        with self._lock:
            self._primary = predictions
            ready = self._shadow is not None
        if ready:
            self._compare()

    def expire(self) -> None:
        """The shadow's deadline passed without an answer."""
        self._end("expired")

    def abandon(self) -> None:
        """The real request got no answer (refused, or past its deadline): nothing to compare with."""
        self._end("failed")

    def _compare(self) -> None:
        if not self._end("compared"):
            return
        agreed = 0
        difference = metrics.SHADOW_SCORE_DIFFERENCE.labels(*self.labels)
        for real, shadow in zip(self._primary, self._shadow, strict=True):
            agreed += real.label == shadow.label
            difference.observe(abs(real.score - shadow.score))
        if agreed:
            metrics.SHADOW_TEXTS.labels(*self.labels, "agree").inc(agreed)
        if agreed < len(self._primary):
            metrics.SHADOW_TEXTS.labels(*self.labels, "disagree").inc(len(self._primary) - agreed)

    def _end(self, outcome: str) -> bool:
        """Count the outcome once; False if it was already over."""
        with self._lock:
            if self._over:
                return False
            self._over = True
        metrics.SHADOW_REQUESTS.labels(*self.labels, outcome).inc()
        return True


def dropped(model: str, version: int, shadow_version: int) -> None:
    """A mirror that was never queued (counted like any outcome)."""
    metrics.SHADOW_REQUESTS.labels(model, str(version), str(shadow_version), "dropped").inc()
