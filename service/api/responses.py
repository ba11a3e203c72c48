"""JSON responses, and the error bodies: the service's own, and the standard protocols' ``{"error": "..."}``."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response
from werkzeug.exceptions import HTTPException

from service.errors import ServiceError


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": {"code": ..., "message": ...}}``: a stable code for programs, a sentence for people."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)


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
