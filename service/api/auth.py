"""Access control on every front door (``SENTIMENT_AUTH=api_keys``): who calls, what they may do, how much.

Every route of the three protocols needs a key in force (`service.keys`),
with the ``predict`` scope; ``"explain": true`` needs ``explain`` as well
(`require`, called where a request asks for explanations); ``admin`` is for
routes that change what is served. Over its rate (a token bucket per key in
Redis, `service.rate_limit`: the limit holds summed over every API process
and host) a key gets 429; a scoring request's key is charged by its enqueue,
in the same round trip, other routes' by a script call of their own.

Open without a key: ``/healthz``, ``/readyz``, ``/metrics`` and the Open
Inference Protocol's server liveness, readiness and metadata, because the
kubelet, load balancers and Prometheus must reach them and they say nothing
about any text (on Kubernetes the NetworkPolicy limits who reaches them); the
demo page, the OpenAPI document and its viewer are static files.

Metrics and logs name a key by its name in the key file (a bounded set),
never the key; a refused 401 has no name.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, current_app, g, request

from service import metrics
from service.config import Settings
from service.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from service.keys import ApiKeys, KeyFileError, parse_presented
from service.rate_limit import Charge, RateLimiter, RateLimitExceeded

log = logging.getLogger("service.auth")

PROTECTED_BLUEPRINTS = frozenset({"native", "tfserving", "kserve"})
OPEN_ENDPOINTS = frozenset({"kserve.server_live", "kserve.server_ready", "kserve.server_metadata"})
REALM = 'Bearer realm="sentiment"'
HOW = "send a key as `Authorization: Bearer <key>` or `X-API-Key: <key>`"


def install(app: Flask, settings: Settings, connection: redis.Redis) -> None:
    """With ``SENTIMENT_AUTH=api_keys``, check every protected request's key, scope and rate before its view runs."""
    if settings.auth == "off":
        return
    try:
        keys = ApiKeys(settings.api_keys_file).start()
    except KeyFileError as exc:
        raise SystemExit(f"SENTIMENT_API_KEYS_FILE: {exc}") from None
    limiter = RateLimiter(connection, settings.redis_key_prefix)
    app.extensions["auth"] = settings.auth  # the OpenAPI document then declares the keys

    @app.before_request
    def authenticate() -> None:
        if not protects(request.endpoint):
            return
        presented = parse_presented(request.headers.get("Authorization"), request.headers.get("X-API-Key"))
        if presented.key is None:
            reason = "missing" if presented.problem is None else "invalid"
            metrics.AUTH_REFUSALS.labels(reason, "").inc()
            if presented.problem is None:
                raise Unauthorized(f"an API key is required: {HOW}", {"WWW-Authenticate": REALM})
            raise Unauthorized(f"{presented.problem}; {HOW}", {"WWW-Authenticate": f'{REALM}, error="invalid_request"'})
        record = keys.authenticate(presented.key)
        if record is None:
            metrics.AUTH_REFUSALS.labels("invalid", "").inc()
            raise Unauthorized("the API key is not valid (unknown or revoked)", {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        g.api_key = record
        require("predict")
        if record.rate_per_s is not None:
            charge = Charge(record.name, record.rate_per_s, record.burst)
            if getattr(current_app.view_functions[request.endpoint], "scores_texts", False):
                g.charge = charge  # charged by the request's enqueue, in its round trip (`service.queue`)
            else:
                take(limiter, charge)
        metrics.KEY_REQUESTS.labels(record.name).inc()

    @app.after_request
    def count_and_tell(response: Response) -> Response:
        record = g.get("api_key")
        if record is None:
            return response
        decision = g.get("rate_limit")
        if decision is not None and decision.allowed:
            response.headers.update(decision.headers())
        if response.status_code < 400 and "scored" in g:
            metrics.KEY_TEXTS.labels(record.name).inc(g.scored.get("texts", 0))
        return response


def take(limiter: RateLimiter, charge: Charge) -> None:
    """Charge a request that queues nothing (model metadata): one round trip to the key's bucket."""
    try:
        decision = limiter.take(charge)
    except redis.RedisError:
        metrics.REDIS_ERRORS.inc()
        raise Unavailable("Redis is unavailable: cannot check the key's rate limit", {"Retry-After": "1"}) from None
    g.rate_limit = decision
    if not decision.allowed:
        metrics.AUTH_REFUSALS.labels("rate_limited", charge.name).inc()
        raise RateLimited(str(RateLimitExceeded(charge, decision)), decision.headers())  # as the enqueue's refusal says it


def protects(endpoint: str | None) -> bool:
    """Whether a route (its endpoint, ``blueprint.view``) needs a key when access control is on."""
    return endpoint is not None and endpoint.split(".", 1)[0] in PROTECTED_BLUEPRINTS and endpoint not in OPEN_ENDPOINTS


def require(scope: str) -> None:
    """Refuse (403) a request whose key lacks ``scope``; a no-op when access control is off (no key was checked)."""
    record = g.get("api_key")
    if record is not None and not record.allows(scope):
        metrics.AUTH_REFUSALS.labels("forbidden", record.name).inc()
        raise Forbidden(f"key {record.name!r} lacks the {scope!r} scope")
