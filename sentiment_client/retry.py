"""When to try again: which failures are worth a retry, how long to wait, and reading ``Retry-After``.

Full jitter (a wait drawn uniformly between 0 and an exponentially growing cap)
spreads the retries of many clients that failed together, so an overloaded
service is not hit again by all of them at the same instant. The server's
``Retry-After`` is a floor: it knows better than the client when it may have room.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

from sentiment_client.errors import OverloadedError, SentimentError, TransportError, UnavailableError


def is_retryable(error: SentimentError) -> bool:
    """503 and 429, and no answer at all: a prediction is idempotent, so sending it again is always safe.

    Never another 4xx (the same request would fail the same way), nor a 504: the
    service had its whole deadline and could not answer in it; sending the same
    work again adds load where there is already too much.
    """
    if isinstance(error, OverloadedError | UnavailableError):
        return True
    return isinstance(error, TransportError) and error.code == "connection_error"


def backoff_seconds(retry: int, base_s: float, cap_s: float, rng: random.Random, retry_after_s: float | None = None) -> float:
    """Wait before retry number ``retry`` (0 for the first): full jitter, never under the server's ``Retry-After``."""
    jitter = rng.uniform(0.0, min(cap_s, base_s * 2**retry))
    return max(jitter, retry_after_s or 0.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP date (RFC 9110 §10.2.3); ``None`` when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
