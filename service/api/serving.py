"""The scoring core as the routes reach it: the process's `Scorer`, and a call with the request's id and deadline.

Every protocol's inference route ends in `score`: the request id and the
``X-Deadline-Ms`` header are HTTP, so they are read here, and the request's
figures (texts, tokens, windows, queue wait) go to the access log line that
`service.api.hooks` writes, refused requests included.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import current_app, g, request

from service.errors import BadRequest, ServiceError
from service.scoring import Deadline, Scored, Scorer

DEADLINE_HEADER = "X-Deadline-Ms"


def scorer() -> Scorer:
    """The current process's scorer (built by `service.api.app.create_app`)."""
    return current_app.extensions["sentiment"]


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


def score(by: Scorer, texts: Sequence[str], explain: bool = False) -> Scored:
    """``by.predict`` for this request: its id, its deadline, its figures for the access log."""
    deadline = Deadline.after(deadline_seconds(by.settings.default_deadline_ms))
    try:
        scored = by.predict(list(texts), request_id=g.request_id, deadline=deadline, explain=explain)
    except ServiceError as exc:
        g.scored = exc.stats or {}
        raise
    g.scored = scored.stats
    return scored
