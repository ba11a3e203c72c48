"""What the protocols' blueprints share: JSON bodies, pydantic errors as one sentence, the standard protocols' error body."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from service.errors import BadRequest, ServiceError
from service.responses import json_response


def parse_json(body: bytes, what: str = "the body") -> object:
    """``body`` as JSON, or a 400 that says why not (orjson refuses invalid UTF-8, lone surrogates and nesting past 1024)."""
    if not body.strip():
        raise BadRequest(f"{what} is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON in {what}: {exc}") from None


def validation_problems(exc: ValidationError, limit: int = 5) -> str:
    """The first few problems pydantic found, as ``field.path: what is wrong`` joined by ``; ``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:limit])


def answer_errors_as_standard(bp: Blueprint) -> None:
    """Make ``bp``'s errors ``{"error": "<message>"}``, the body of TensorFlow Serving's and the Open Inference Protocol's errors.

    Same statuses and headers (``Retry-After``, ``Allow``) as the service's own
    routes; only the body differs. Errors raised before a route matched (an
    unknown path, a wrong method) keep the service's own body.
    """

    @bp.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        return json_response({"error": exc.message}, exc.status, exc.headers)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return json_response({"error": exc.description or exc.name}, exc.code or 500, headers)
