"""What ``predict`` returns: one ``Prediction`` per text, read strictly from the service's JSON.

Fields the client does not know yet (the API may add some, such as ``windows``
or ``explanation``) are kept in ``extra`` instead of failing the call, so an
older client keeps working against a newer service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_KNOWN = ("label", "score", "truncated", "tokens")
_OPTIONAL = ("windows", "explanation", "scores")


class InvalidPayload(ValueError):
    """A 200 answer that does not follow the API; the client turns it into ``TransportError("invalid_response")``."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | str


@dataclass(frozen=True)
class TokenWeight:
    """One token of an explanation: ``text[start:end]`` pushed the logit by ``weight`` (None: not read)."""

    token: str
    start: int
    end: int
    weight: float | None
    read: bool


@dataclass(frozen=True)
class Explanation:
    """Why a text got its score: each token's weight on the logit (log-odds of positive), by ``method``."""

    method: str
    logit: float
    tokens: list[TokenWeight]

    def strongest(self, n: int = 5) -> list[TokenWeight]:
        """The ``n`` tokens that weighed most, either way."""
        return sorted((t for t in self.tokens if t.read), key=lambda t: -abs(t.weight or 0.0))[:n]


@dataclass(frozen=True)
class Prediction:
    """One text's prediction.

    ``model`` and ``request_id`` belong to the HTTP request that answered this
    text: the parts of a split call may be answered by different model versions
    during a rollout, and the request id finds the server's log lines.
    """

    label: str
    """The chosen label, one of the model's labels (``positive`` or ``negative`` for the movie model)."""
    score: float
    """Binary models: P(positive), as always. Categorical models: the probability of ``label``."""
    truncated: bool
    """The text was longer than the model's token limit and lost its middle."""
    tokens: int
    """Length in tokens, before truncation."""
    windows: int = 1
    """Windows of the model's input the text was read in (more than 1 for a long text)."""
    explanation: Explanation | None = None
    """Only when ``predict(..., explain=True)`` asked for it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields of the prediction this client does not know, as the service sent them."""
    model: ModelRef | None = None
    request_id: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    """Every label's probability (``{label: p}``); empty from a service that predates it."""

    def to_dict(self) -> dict[str, Any]:
        """The prediction as the service sent it (known fields and ``extra``)."""
        out = {"label": self.label, "score": self.score, "truncated": self.truncated, "tokens": self.tokens, "windows": self.windows}
        if self.scores:
            out["scores"] = dict(self.scores)
        if self.explanation is not None:
            out["explanation"] = {
                "method": self.explanation.method,
                "logit": self.explanation.logit,
                "tokens": [vars(t) for t in self.explanation.tokens],
            }
        return {**out, **self.extra}


def parse_predictions(payload: Any, expected: int, sent_request_id: str | None = None) -> list[Prediction]:
    """The predictions of a ``POST /predict`` answer, checked against the API; raises ``InvalidPayload``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
        raise InvalidPayload('the answer has no "predictions" list')
    items = payload["predictions"]
    if len(items) != expected:
        raise InvalidPayload(f"{len(items)} predictions for {expected} texts")
    model = _model(payload.get("model"))
    request_id = payload.get("request_id") if isinstance(payload.get("request_id"), str) else sent_request_id
    return [_prediction(index, item, model, request_id) for index, item in enumerate(items)]


def _model(value: Any) -> ModelRef | None:
    if isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("version"), int | str):
        return ModelRef(value["name"], value["version"])
    return None


def _prediction(index: int, item: Any, model: ModelRef | None, request_id: str | None) -> Prediction:
    if not isinstance(item, dict):
        raise InvalidPayload(f"predictions[{index}] is not an object")
    label, score, truncated, tokens = (item.get(name) for name in _KNOWN)
    valid = (
        isinstance(label, str)
        and isinstance(score, int | float)
        and not isinstance(score, bool)
        and isinstance(truncated, bool)
        and isinstance(tokens, int)
        and not isinstance(tokens, bool)
    )
    if not valid:
        raise InvalidPayload(f"predictions[{index}] lacks a valid label, score, truncated or tokens")
    windows = item.get("windows", 1)
    if not isinstance(windows, int) or isinstance(windows, bool):
        raise InvalidPayload(f"predictions[{index}] has an invalid windows count")
    explanation = _explanation(index, item["explanation"]) if item.get("explanation") is not None else None
    scores = _scores(index, item.get("scores", {}))
    extra = {key: value for key, value in item.items() if key not in _KNOWN + _OPTIONAL}
    return Prediction(label, float(score), truncated, tokens, windows, explanation, extra, model, request_id, scores)


def _scores(index: int, value: Any) -> dict[str, float]:
    valid = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(p, int | float) and not isinstance(p, bool) for k, p in value.items()
    )
    if not valid:
        raise InvalidPayload(f"predictions[{index}] has invalid scores")
    return {k: float(p) for k, p in value.items()}


def _explanation(index: int, value: Any) -> Explanation:
    try:
        tokens = [
            TokenWeight(
                str(t["token"]), int(t["start"]), int(t["end"]), None if t["weight"] is None else float(t["weight"]), bool(t["read"])
            )
            for t in value["tokens"]
        ]
        return Explanation(str(value["method"]), float(value["logit"]), tokens)
    except (KeyError, TypeError, ValueError):
        raise InvalidPayload(f"predictions[{index}] has an invalid explanation") from None
