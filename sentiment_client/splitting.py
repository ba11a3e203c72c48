"""How a call's texts become requests the server accepts: its limits, each text's JSON once, runs within them.

The server says its limits in ``GET /model`` (texts per request, body bytes);
a list longer than they allow is cut into consecutive runs, sent as requests of
their own (in parallel, `SentimentClient`) and put back in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sentiment_client.errors import BadRequestError

FALLBACK_MAX_TEXTS = 64
"""Texts per request when the server does not say (its own default limit)."""

_ENVELOPE = len(b'{"texts":[]}')


@dataclass(frozen=True)
class Limits:
    """What one request may carry, from ``GET /model`` ``limits`` (or the fallback)."""

    max_texts_per_request: int
    max_body_bytes: int | None = None


def encode_text(index: int, text: str) -> bytes:
    """A text as a JSON string, once: its size decides the split and the bytes make the body."""
    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError(f"texts[{index}] is not valid Unicode (a lone surrogate)", code="bad_request") from None


def split(pieces: list[bytes], limits: Limits) -> list[range]:
    """Consecutive runs of texts, each within the count limit and, when known, the body limit."""
    chunks: list[range] = []
    start, size = 0, _ENVELOPE
    for index, piece in enumerate(pieces):
        count = index - start
        grown = size + len(piece) + (1 if count else 0)
        too_big = limits.max_body_bytes is not None and grown > limits.max_body_bytes
        if count and (count >= limits.max_texts_per_request or too_big):
            chunks.append(range(start, index))
            start, grown = index, _ENVELOPE + len(piece)
        size = grown
    chunks.append(range(start, len(pieces)))
    return chunks


def limits_from(body: bytes) -> Limits:
    try:
        limits = json.loads(body).get("limits")
        max_texts, max_body = limits["max_texts_per_request"], limits.get("max_body_bytes")
    except (ValueError, AttributeError, TypeError, KeyError):
        return Limits(FALLBACK_MAX_TEXTS)  # an older server: no limits advertised
    if not isinstance(max_texts, int) or max_texts < 1:
        return Limits(FALLBACK_MAX_TEXTS)
    return Limits(max_texts, max_body if isinstance(max_body, int) and max_body > _ENVELOPE else None)
