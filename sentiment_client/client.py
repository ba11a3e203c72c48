"""``SentimentClient``: predictions from the service's ``POST /predict``, with splitting, retries and one time budget.

    client = SentimentClient("http://127.0.0.1:8000", timeout=5.0)
    prediction = client.predict("A moving, beautifully acted film.")
    print(prediction.label, prediction.score)

The ``timeout`` is the budget of a whole call: every attempt, every wait between
attempts and every part of a split call fit in it. Each request tells the
server the time left (``X-Deadline-Ms``), so the server gives up when the caller
would, instead of scoring texts nobody waits for any more.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, overload

from sentiment_client.errors import (
    DeadlineExceededError,
    PayloadTooLargeError,
    SentimentError,
    TransportError,
    error_from_response,
)
from sentiment_client.results import InvalidPayload, Prediction, parse_predictions
from sentiment_client.retry import backoff_seconds, is_retryable, parse_retry_after
from sentiment_client.splitting import FALLBACK_MAX_TEXTS, Limits, encode_text, limits_from, split
from sentiment_client.transport import Response, Transport

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_MIN_ATTEMPT_S = 0.05  # less time than this left: an attempt could only end in a timeout
_USER_AGENT = "sentiment-client/0.1 (python http.client)"


class SentimentClient:
    """A client of the sentiment service. Thread-safe: share one per process.

        client = SentimentClient("http://127.0.0.1:8000")
        for p in client.predict(["Loved it.", "Dull and far too long."]):
            print(p.label, round(p.score, 3))

    ``timeout`` (seconds) bounds each call, retries included; ``retries`` is how
    many times a request is sent again after a 503, a 429 or a connection error.
    Lists longer than the server's ``max_texts_per_request`` (read once from
    ``GET /model``, or given here) or its body limit are sent as several requests
    in parallel, on up to ``max_workers`` threads; the results keep the input order.
    ``api_key`` (default: ``$SENTIMENT_API_KEY``) is sent as ``Authorization: Bearer``
    when the service asks for keys. ``sleep``, ``clock`` and ``rng`` are the time and randomness the retry policy
    uses (tests pass their own to watch the waits).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retries: int = 3,
        *,
        max_workers: int = 4,
        max_texts_per_request: int | None = None,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        api_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        if retries < 0 or max_workers < 1:
            raise ValueError("retries must be >= 0 and max_workers >= 1")
        if max_texts_per_request is not None and max_texts_per_request < 1:
            raise ValueError("max_texts_per_request must be >= 1")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self.max_workers = max_workers
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._transport = Transport(self.url, ssl_context)
        api_key = api_key if api_key is not None else os.environ.get("SENTIMENT_API_KEY") or None
        if api_key is not None and (not api_key.isascii() or not api_key.isprintable() or " " in api_key):
            raise ValueError("api_key must be printable ASCII without spaces")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._limits: Limits | None = Limits(max_texts_per_request) if max_texts_per_request else None
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SentimentClient({self.url!r}, timeout={self.timeout}, retries={self.retries})"

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread pool and close idle connections."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._transport.close()

    @overload
    def predict(self, texts: str, *, request_id: str | None = None, timeout: float | None = None, explain: bool = False) -> Prediction: ...

    @overload
    def predict(
        self, texts: Iterable[str], *, request_id: str | None = None, timeout: float | None = None, explain: bool = False
    ) -> list[Prediction]: ...

    def predict(self, texts, *, request_id=None, timeout=None, explain=False):
        """The prediction of one text (a ``str``), or the predictions of a list of texts in its order.

        ``explain=True`` asks for each prediction's ``explanation``: the signed weight
        of every word of the text (and where it is in the text, to highlight it).

        ``request_id`` (default: a new random one) is sent as ``X-Request-ID``; the
        requests of a split call carry ``<request_id>.<n>``, and a request sent
        again keeps its id, so the server's logs tie every attempt to the call.
        ``timeout`` overrides the client's budget for this call. Raises a
        ``SentimentError`` subclass when a text could not be scored.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for index, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is a {type(text).__name__}, not a str")
        if not items:
            return []
        base_id = request_id if request_id is not None else uuid.uuid4().hex
        if not _REQUEST_ID.fullmatch(base_id):
            raise ValueError("request_id must be 1-128 characters of letters, digits and ._:/+=-")
        deadline = self._clock() + (self.timeout if timeout is None else timeout)
        pieces = [encode_text(index, text) for index, text in enumerate(items)]
        chunks = split(pieces, self._read_limits(deadline)) if len(items) > 1 else [range(1)]
        if len(chunks) == 1:
            predictions = self._predict_chunk(pieces, chunks[0], base_id, deadline, len(items) > 1, explain)
        else:
            predictions = self._predict_parallel(pieces, chunks, base_id, deadline, explain)
        return predictions[0] if single else predictions

    def model_info(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``GET /model``: name, version, limits and metadata of the served model, retried like a prediction."""
        deadline = self._clock() + (self.timeout if timeout is None else timeout)
        request_id = uuid.uuid4().hex
        response = self._call("GET", "/model", None, request_id, deadline)
        try:
            info = json.loads(response.body)
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise TransportError("GET /model did not answer a JSON object", code="invalid_response", status=200, request_id=request_id)
        return info

    def limits(self) -> Limits:
        """What one request may carry, as this client uses it (read from the server on first use)."""
        return self._read_limits(self._clock() + self.timeout)

    # --- one call ------------------------------------------------------------------

    def _predict_parallel(self, pieces: list[bytes], chunks: list[range], base_id: str, deadline: float, explain: bool) -> list[Prediction]:
        """Send the parts of a split call at once; the first failure (in input order) is the call's failure."""
        pool = self._executor()
        futures = [
            pool.submit(self._predict_chunk, pieces, chunk, _derived_id(base_id, n), deadline, True, explain)
            for n, chunk in enumerate(chunks)
        ]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in futures if future in done and future.exception() is not None]
        if failed:
            for future in pending:
                future.cancel()
            raise failed[0].exception()
        return [prediction for future in futures for prediction in future.result()]

    def _predict_chunk(
        self, pieces: list[bytes], chunk: range, request_id: str, deadline: float, split: bool, explain: bool = False
    ) -> list[Prediction]:
        options = b',"explain":true' if explain else b""
        body = b'{"texts":[' + b",".join(pieces[chunk.start : chunk.stop]) + b"]" + options + b"}"
        try:
            try:
                response = self._call("POST", "/predict", body, request_id, deadline)
            except PayloadTooLargeError:
                if len(chunk) < 2:
                    raise
                # Too much model input at once (long texts are read in several windows, which the server bounds
                # per request): each half, in turn.
                middle = chunk.start + len(chunk) // 2
                halves = (range(chunk.start, middle), range(middle, chunk.stop))
                return [
                    p
                    for n, half in enumerate(halves)
                    for p in self._predict_chunk(pieces, half, f"{request_id}-{n}", deadline, True, explain)
                ]
            try:
                return parse_predictions(json.loads(response.body), len(chunk), request_id)
            except (ValueError, InvalidPayload) as exc:
                raise TransportError(
                    f"the answer does not follow the API: {exc}", code="invalid_response", status=200, request_id=request_id
                ) from None
        except SentimentError as error:
            if split:
                error.texts = chunk
            raise

    def _call(self, method: str, path: str, body: bytes | None, request_id: str, deadline: float) -> Response:
        """One request until a 200, sent again after retryable failures while retries and time are left."""
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT, "X-Request-ID": request_id, **self._auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining < _MIN_ATTEMPT_S:
                raise DeadlineExceededError(
                    "the call's timeout ran out before the request could be sent", code="timeout", request_id=request_id
                )
            if body is not None:
                headers["X-Deadline-Ms"] = str(_server_deadline_ms(remaining))
            try:
                response = self._transport.request(method, path, body, headers, remaining)
            except TimeoutError:
                error = DeadlineExceededError(
                    f"no answer within the call's timeout ({remaining:.2f} s left)", code="timeout", request_id=request_id
                )
                error.attempts = attempt
                raise error from None
            except ssl.SSLError as exc:
                error = TransportError(f"TLS failed: {exc}", code="tls_error", request_id=request_id)
            except (OSError, http.client.HTTPException) as exc:
                error = TransportError(
                    f"no answer from {self.url}: {type(exc).__name__}: {exc}", code="connection_error", request_id=request_id
                )
            else:
                if response.status == 200:
                    return response
                echoed = response.headers.get("X-Request-ID") or request_id
                error = error_from_response(response.status, response.body, echoed, parse_retry_after(response.headers.get("Retry-After")))
            error.attempts = attempt
            if attempt > self.retries or not is_retryable(error):
                raise error
            pause = backoff_seconds(attempt - 1, self.backoff_base_s, self.backoff_max_s, self._rng, error.retry_after)
            if self._clock() + pause + _MIN_ATTEMPT_S > deadline:
                raise error  # the wait would leave no time for another attempt: fail now, not at the deadline
            self._sleep(pause)

    # --- limits and threads ---------------------------------------------------------

    def _read_limits(self, deadline: float) -> Limits:
        """The server's limits from ``GET /model``, cached once read; the fallback (not cached) when it can't be read now."""
        with self._lock:
            if self._limits is not None:
                return self._limits
        remaining = deadline - self._clock()
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT, **self._auth}
        try:
            response = self._transport.request("GET", "/model", None, headers, max(_MIN_ATTEMPT_S, min(1.0, remaining / 4)))
        except (OSError, http.client.HTTPException):
            return Limits(FALLBACK_MAX_TEXTS)
        if response.status == 200:
            limits = limits_from(response.body)
        elif response.status in (404, 405):
            limits = Limits(FALLBACK_MAX_TEXTS)  # a server older than GET /model: it will not tell
        else:
            return Limits(FALLBACK_MAX_TEXTS)
        with self._lock:
            self._limits = limits
        return limits

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="sentiment-client")
            return self._pool


def _derived_id(base: str, n: int) -> str:
    """``<base>.<n>``, cut to the server's 128 characters."""
    suffix = f".{n}"
    return base[: 128 - len(suffix)] + suffix


def _server_deadline_ms(remaining_s: float) -> int:
    """The time left, less a margin for the answer's trip back, so the server's 504 arrives before the client gives up."""
    margin = min(0.5, remaining_s / 10)
    return max(1, int((remaining_s - margin) * 1000))
