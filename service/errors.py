"""Errors a client can see: each carries its HTTP status and a stable code.

The API (`service.api.app`) turns any `ServiceError` (and any HTTP error Flask
raises) into ``{"error": {"code": ..., "message": ...}}`` in one handler; the
standard protocols into their own ``{"error": "..."}``.
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.stats: dict | None = None  # what the refused request was (texts, tokens, ...), for its access-log line


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class NotFound(ServiceError):
    """An unknown model, version or label (never served, or no longer)."""

    status = 404
    code = "not_found"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class Overloaded(ServiceError):
    status = 503
    code = "overloaded"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


class DeadlineExceeded(ServiceError):
    status = 504
    code = "deadline_exceeded"


class Unauthorized(ServiceError):
    """No key, or not a key in force: ``WWW-Authenticate: Bearer`` says how to present one (RFC 6750)."""

    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """A key in force without the scope the request needs."""

    status = 403
    code = "forbidden"


class RateLimited(ServiceError):
    """A key over its rate: ``Retry-After`` and the ``RateLimit`` headers say when it may send again."""

    status = 429
    code = "rate_limited"
