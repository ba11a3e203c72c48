"""What every HTTP request goes through, whatever its protocol: request id, metrics, access log.

`inference_route` marks the routes that score texts (``/predict`` and the other
protocols' equivalents): they count as in flight, their latency is measured,
and an error they answer is counted as a refusal by reason. Every request gets
one access-log line, with the request id that the worker's batch log line also
carries, so that one request can be followed from the API to its batch.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from service import metrics
from service.errors import BadRequest, ServiceError

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_HEADERS = ("X-Model-Name", "X-Model-Version")  # on every answer a model version gave: which one
UNROUTED = ("", "")  # the metrics' model and version labels of a request refused before a version was chosen
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

# Error codes (of `service.errors` and of Flask's HTTP errors) → the `reason` label of refusals.
REFUSAL_REASONS = {
    "bad_request": "bad_request",
    "payload_too_large": "too_large",
    "request_entity_too_large": "too_large",
    "unsupported_media_type": "unsupported_media_type",
    "overloaded": "overloaded",
    "unavailable": "unavailable",
    "deadline_exceeded": "deadline_exceeded",
    "not_found": "not_found",
}


def error_code(exc: Exception) -> str:
    if isinstance(exc, ServiceError):
        return exc.code
    if isinstance(exc, HTTPException):
        return (exc.name or "error").lower().replace(" ", "_")
    return "internal"


def inference_route(view: Callable) -> Callable:
    """Decorate a view that scores texts: in-flight gauge, latency histogram, refusals by reason."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.inference = True
        metrics.IN_FLIGHT.inc()
        try:
            return view(*args, **kwargs)
        except (ServiceError, HTTPException) as exc:
            reason = REFUSAL_REASONS.get(error_code(exc))
            if reason:
                metrics.REQUESTS_REFUSED.labels(reason, *g.get("served", UNROUTED)).inc()
            g.error = error_code(exc)
            raise
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.HTTP_SECONDS.labels(request.url_rule.rule, *g.get("served", UNROUTED)).observe(time.perf_counter() - g.started)

    wrapper.scores_texts = True  # type: ignore[attr-defined]  # access control charges its key when it queues
    return wrapper


def install(app: Flask) -> None:
    """Register the hooks on ``app``."""

    @app.before_request
    def assign_request_id() -> None:
        g.started = time.perf_counter()
        given = request.headers.get(REQUEST_ID_HEADER)
        g.request_id = given if given and _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()  # uuid4-random, cheaper
        if given is not None and given != g.request_id:
            raise BadRequest(f"{REQUEST_ID_HEADER} must be 1-128 characters of letters, digits and ._:/+=-")

    @app.after_request
    def tag_response(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        if "served" in g:
            response.headers.update(zip(MODEL_HEADERS, g.served, strict=True))
        route = request.url_rule.rule if request.url_rule else "unmatched"
        status = response.status_code
        metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
        inference = g.get("inference", False)
        if inference or (status >= 400 and route != "/readyz"):  # a probe's 503 is an answer, not an event
            fields = {
                "request_id": g.get("request_id", ""),
                "method": request.method,
                "route": route,
                "status": status,
                "latency_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
            }
            if "api_key" in g:
                fields["key"] = g.api_key.name  # the key's name in the key file, never the key
            if inference:
                fields.update(g.get("scored", {}))
            if status >= 400:
                fields["error"] = g.get("error") or response.status.split(" ", 1)[-1].lower().replace(" ", "_")
            log.log(logging.WARNING if status >= 500 else logging.INFO, "request", extra=fields)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"request_id": g.get("request_id", ""), "route": route, "status": status})
        return response
