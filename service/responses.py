"""JSON responses, and the error body every route of the native API answers with."""

from __future__ import annotations

import orjson
from flask import Response


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": {"code": ..., "message": ...}}``: a stable code for programs, a sentence for people."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)
