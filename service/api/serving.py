"""The scoring core as the routes reach it: the process's `ModelRouter`, and a call with the request's id and deadline.

Every protocol's inference route ends in `score`: the request id and the
``X-Deadline-Ms`` header are HTTP, so they are read here; the version that
answered goes to the response's headers and the metrics' labels, and the
request's figures (texts, tokens, windows, queue wait) to the access log line
that `service.api.hooks` writes, refused requests included.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import current_app, g, request

from service.api.auth import require
from service.errors import BadRequest, ServiceError
from service.routing import ModelRouter, Route
from service.scoring import Deadline, Scored

DEADLINE_HEADER = "X-Deadline-Ms"


def router() -> ModelRouter:
    """The current process's router (built by `service.api.app.create_app`)."""
    return current_app.extensions["sentiment"]


def route(model: str | None = None, version: int | None = None, label: str | None = None) -> Route:
    """The version that answers this request (and its shadow), chosen by the config in force and the request id."""
    return router().route(model, version, label, g.request_id)


def deadline_seconds(default_ms: int) -> float:
    """The server's deadline, or the client's shorter one from ``X-Deadline-Ms``."""
    given = request.headers.get(DEADLINE_HEADER)
    if given is None:
        return default_ms / 1000
    try:
        value = int(given)
    except ValueError:
        raise BadRequest(f"{DEADLINE_HEADER} must be a whole number of milliseconds") from None
    if value <= 0:
        raise BadRequest(f"{DEADLINE_HEADER} must be positive")
    return min(value, default_ms) / 1000


def score(to: Route, texts: Sequence[str], explain: bool = False) -> Scored:
    """Score ``texts`` by the route's version for this request: its id, its deadline, its figures for the log."""
    if explain:
        require("explain")
    scorer = to.scorer
    g.served = scorer.labels  # (model, version): the answer's headers, the metrics' labels
    deadline = Deadline.after(deadline_seconds(scorer.settings.default_deadline_ms))
    try:
        scored = scorer.predict(
            list(texts), request_id=g.request_id, deadline=deadline, explain=explain, shadow=to.shadow, charge=g.get("charge")
        )
    except ServiceError as exc:
        g.scored = exc.stats or {}
        raise
    g.scored = scored.stats
    if scored.rate_limit is not None:
        g.rate_limit = scored.rate_limit
    return scored
