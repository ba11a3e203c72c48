"""Errors a caller can catch: one base class, one subclass per thing a caller may want to handle.

Every error carries the service's ``code`` (``bad_request``, ``overloaded``, …) and
message, the HTTP status (``None`` when no HTTP answer came back), the request id
(the one the server echoed, else the one sent) and, for 429/503, the server's
``Retry-After`` in seconds. Errors of the client's own making use their own codes:
``timeout`` (the call's time budget ran out), ``connection_error`` (no HTTP answer)
and ``invalid_response`` (an answer that does not follow the API).

    try:
        client.predict(texts)
    except OverloadedError as exc: ...  # still overloaded after the retries; exc.retry_after says when to come back
"""

from __future__ import annotations

import json
from http import HTTPStatus


class SentimentError(Exception):
    """Base class of every error the client raises for a call that did not get its predictions."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = 1
        """HTTP attempts made for the request that failed (retries included)."""
        self.texts: range | None = None
        """Positions, in the caller's list, of the texts the failed request carried (a split call sends several requests)."""

    def __str__(self) -> str:
        where = f"{self.status} {self.code}" if self.status else self.code
        parts = [f"{where}: {self.message}"]
        if self.texts is not None and len(self.texts) > 0:
            parts.append(f"texts {self.texts.start}-{self.texts.stop - 1} of the call")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


class BadRequestError(SentimentError):
    """400: the request itself is wrong (blank text, NUL character, bad header); sending it again won't help."""


class PayloadTooLargeError(SentimentError):
    """413: too many texts, a text over the character limit, or a body over the byte limit."""


class AuthenticationError(SentimentError):
    """401: no API key, or not one in force (unknown or revoked). Not retried: pass ``api_key=`` or set ``SENTIMENT_API_KEY``."""


class PermissionDeniedError(SentimentError):
    """403: the API key lacks a scope the request needs (``explain`` for explanations). Not retried."""


class OverloadedError(SentimentError):
    """503 ``overloaded`` (the service's queue is full) or 429 (a rate limit): retried, raised once retries run out."""


class UnavailableError(SentimentError):
    """503 other than ``overloaded``: Redis is away or no inference worker is alive. Retried, raised once retries run out."""


class DeadlineExceededError(SentimentError):
    """504 ``deadline_exceeded`` from the service, or code ``timeout``: the call's own time budget ran out."""


class TransportError(SentimentError):
    """No usable HTTP answer: connection refused or reset (code ``connection_error``, retried) or ``invalid_response``."""


def error_from_response(status: int, body: bytes, request_id: str | None, retry_after: float | None) -> SentimentError:
    """The typed error for a non-200 answer; proxies may answer with HTML or plain text, which is kept as the message."""
    code, message = _code_and_message(status, body)
    if status == 400:
        cls = BadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 413:
        cls = PayloadTooLargeError
    elif status == 429 or (status == 503 and code == "overloaded"):
        cls = OverloadedError
    elif status == 503:
        cls = UnavailableError
    elif status == 504:
        cls = DeadlineExceededError
    else:
        cls = SentimentError
    return cls(message, code=code, status=status, request_id=request_id, retry_after=retry_after)


def _code_and_message(status: int, body: bytes) -> tuple[str, str]:
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
        if isinstance(code, str) and isinstance(message, str) and code:
            return code, message
    except (ValueError, TypeError, KeyError):
        pass
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    text = " ".join(body.decode("utf-8", "replace").split())[:200]
    return phrase.lower().replace(" ", "_").replace("-", "_"), text or phrase
