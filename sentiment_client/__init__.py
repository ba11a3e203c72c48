"""Client of the sentiment service's HTTP API, standard library only.

    from sentiment_client import SentimentClient
    client = SentimentClient("http://127.0.0.1:8000")
    print(client.predict(["A moving film.", "Dull and far too long."]))

From a shell: ``python -m sentiment_client "text" ...`` (``--help`` says more).
"""

from sentiment_client.client import SentimentClient
from sentiment_client.errors import (
    AuthenticationError,
    BadRequestError,
    DeadlineExceededError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    SentimentError,
    TransportError,
    UnavailableError,
)
from sentiment_client.results import Explanation, ModelRef, Prediction, TokenWeight
from sentiment_client.splitting import FALLBACK_MAX_TEXTS, Limits

__all__ = [
    "FALLBACK_MAX_TEXTS",
    "AuthenticationError",
    "BadRequestError",
    "DeadlineExceededError",
    "Explanation",
    "Limits",
    "ModelRef",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Prediction",
    "SentimentClient",
    "SentimentError",
    "TokenWeight",
    "TransportError",
    "UnavailableError",
]
