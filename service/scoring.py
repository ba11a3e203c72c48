"""The scoring core of an API process: texts → token ids → queue → a worker's answer → predictions. No web framework.

Every front door (``/predict``, TensorFlow Serving's, KServe's) parses its own
request format, then hands plain texts to a `Scorer`, which applies the same
limits, tokenizer, long-text windows, deadline, back-pressure and metrics to
all of them, and never reaches the model except through the Redis queue. What
is HTTP about it (headers, the request id, the access log) is the caller's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import redis

from service import metrics
from service.codec import Answer, WorkerError, read_answer
from service.config import Settings
from service.errors import BadRequest, DeadlineExceeded, Overloaded, PayloadTooLarge, RateLimited, ServiceError, Unavailable
from service.explanations import explain_texts, explained_outputs
from service.labels import LabelReader, Read
from service.model_store import ModelVersion
from service.queue import QueueFull, RequestQueue
from service.rate_limit import Charge, Decision, RateLimitExceeded
from service.results import RedisUnavailable, ResultListener
from service.shadow import ShadowComparison, dropped
from service.tokenizer import Encoded, LongTextPolicy, Tokenizer


@dataclass(frozen=True)
class Prediction:
    """One text's answer, before a protocol shapes it."""

    label: str
    score: float
    truncated: bool
    tokens: int
    windows: int = 1
    encoded: Encoded | None = field(default=None, repr=False, compare=False)  # what the model read, for protocols that say
    explanation: dict | None = None
    scores: dict[str, float] = field(default_factory=dict)  # every label's probability

    def as_dict(self) -> dict:
        answer = {"label": self.label, "score": round(self.score, 6), "truncated": self.truncated, "tokens": self.tokens}
        answer["windows"] = self.windows
        answer["scores"] = {label: round(p, 6) for label, p in self.scores.items()}
        if self.explanation is not None:
            answer["explanation"] = self.explanation
        return answer


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered: an instant of `time.perf_counter`, and the budget it was given (for messages)."""

    at: float
    budget_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.perf_counter() + seconds, seconds)

    def left(self) -> float:
        return self.at - time.perf_counter()

    def __str__(self) -> str:
        return f"the deadline of {self.budget_s * 1000:.0f} ms"


@dataclass(frozen=True)
class Scored:
    """A request's predictions (one per text, in order), the version that made them, and its figures for the access log."""

    predictions: list[Prediction]
    model: ModelVersion
    stats: dict
    rate_limit: Decision | None = None  # the caller's key's bucket after this request (its RateLimit headers)


def serving_tokenizer(model: ModelVersion, settings: Settings) -> Tokenizer:
    """The version's tokenizer, reading long texts as the settings say (the version's policy by default)."""
    tokenizer = model.load_tokenizer()
    policy = tokenizer.long_texts
    if settings.long_text_policy == "head_tail":
        policy = LongTextPolicy("head_tail", tokenizer.max_length)
    elif settings.max_windows_per_text and policy.kind == "windows":
        policy = replace(policy, max_windows=settings.max_windows_per_text)
    return tokenizer.with_policy(policy)


class Scorer:
    """Scores texts with one model version, through the queue and a worker."""

    def __init__(self, settings: Settings, model: ModelVersion, queue: RequestQueue, listener: ResultListener, tokenizer: Tokenizer):
        self.settings = settings
        self.model = model
        self.queue = queue
        self.listener = listener
        self.tokenizer = tokenizer
        self._workers_alive = True
        self._workers_checked_at = 0.0
        self.labels = (model.name, str(model.version))  # of its metrics
        self.reader = LabelReader(model, tokenizer.long_texts.aggregate)
        for label in model.labels:  # exported as 0 from the start, so that a share of them has a value
            metrics.PREDICTIONS.labels(*self.labels, label)

    def check_texts(self, texts: Sequence[object], field: str = "texts") -> list[str]:
        """The texts, or the 4xx that says which one is wrong and why (every protocol applies the same limits)."""
        if not texts:
            raise BadRequest(f'"{field}" must hold at least one text')
        limit = self.settings.max_texts_per_request
        if len(texts) > limit:
            raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {limit}")
        max_chars = self.settings.max_text_chars
        for index, text in enumerate(texts):
            where = field if field == "text" else f"{field}[{index}]"
            if not isinstance(text, str):
                raise BadRequest(f"{where} must be a string")
            if len(text) > max_chars:
                raise PayloadTooLarge(f"{where} has {len(text)} characters; the limit is {max_chars}")
            if "\x00" in text:
                raise BadRequest(f"{where} contains a NUL character")
            if not text.strip():
                raise BadRequest(f"{where} is empty")
        return list(texts)  # type: ignore[arg-type]

    def predict(
        self,
        texts: list[str],
        *,
        request_id: str,
        deadline: Deadline,
        explain: bool = False,
        shadow: Scorer | None = None,
        charge: Charge | None = None,
    ) -> Scored:
        """Score checked ``texts`` before ``deadline``; with ``explain``, each with the split of its logit over its
        tokens; with ``shadow``, also mirrored to that version, whose answers are only compared with these.
        ``request_id`` (the client's) goes to the worker's batch log line. A refusal (`ServiceError`) carries the
        request's figures as ``stats``, for the access log. ``charge``: the caller's API key, charged for the request
        in the enqueue's round trip (`RateLimited` over its rate)."""
        if explain and not self.model.explains:
            raise BadRequest(f"{self.model.name} v{self.model.version} cannot explain its scores (exported before explanations)")
        encoded = self.tokenizer.encode_batch(texts)
        sequences = [window for e in encoded for window in e.windows]
        stats = {
            "texts": len(encoded),
            "tokens": sum(e.n_tokens for e in encoded),
            "truncated": sum(e.truncated for e in encoded),
            "windows": len(sequences),
        }
        comparisons: list[ShadowComparison] = []

        def mirror() -> None:  # after the real request is queued: it never waits for the shadow's
            if shadow is not None:
                comparisons.extend(filter(None, [shadow.mirror(texts, deadline, self.model.version)]))

        try:
            if len(sequences) > self.settings.max_windows_per_request:
                raise PayloadTooLarge(
                    f"these texts need {len(sequences)} windows of the model's input; the limit per request is "
                    f"{self.settings.max_windows_per_request}: send the long texts in separate requests"
                )
            self._observe_inputs(encoded)
            values, waited, rate = self._run(sequences, request_id, deadline, explain, mirror, charge)
        except ServiceError as exc:
            exc.stats = stats
            for comparison in comparisons:
                comparison.abandon()
            raise
        stats["queue_wait_ms"] = round(waited * 1000, 2)
        if explain:
            metrics.EXPLAIN_REQUESTS.inc()
        answer = read_answer(values, [len(s) for s in sequences], explain, self.model.classes)
        reads = self._read(encoded, answer)
        explanations = [None] * len(texts)
        if explain:  # of each text's label: its output's logit and weights
            explanations = explain_texts(self.tokenizer, texts, encoded, explained_outputs(answer, encoded, [r.explained for r in reads]))
        predictions = self._predictions(encoded, reads, explanations)
        self._observe_outputs(predictions)
        for comparison in comparisons:
            comparison.primary(predictions)
        return Scored(predictions, self.model, stats, rate)

    def mirror(self, texts: list[str], deadline: Deadline, primary_version: int) -> ShadowComparison | None:
        """Queue ``texts`` for this (shadow) version with nobody waiting; None when it is dropped instead: no live
        worker, too many windows, its queue past a quarter of the bound (shadow traffic goes first), Redis failing."""
        model, version = self.model.name, self.model.version
        if not self.workers_alive():
            dropped(model, primary_version, version)
            return None
        encoded = self.tokenizer.encode_batch(texts)
        sequences = [window for e in encoded for window in e.windows]
        lengths = [len(s) for s in sequences]
        if len(sequences) > self.settings.max_windows_per_request or deadline.left() <= 0:
            dropped(model, primary_version, version)
            return None

        def score(values: Sequence[float]) -> list[Prediction]:
            return self._predictions(
                encoded, self._read(encoded, read_answer(values, lengths, False, self.model.classes)), [None] * len(encoded)
            )

        comparison = ShadowComparison(model, primary_version, version, score)
        key = os.urandom(16).hex()
        self.listener.expect(key, comparison, expires_at=deadline.at)
        deadline_ms = int((time.time() + deadline.left()) * 1000)
        try:
            self.queue.enqueue(key, sequences, deadline_ms, max(1, self.settings.queue_max_requests // 4), self.listener.reply_to)
        except (QueueFull, redis.RedisError):
            self.listener.forget(key)
            dropped(model, primary_version, version)
            return None
        return comparison

    def _read(self, encoded: Sequence[Encoded], answer: Answer) -> list[Read]:
        """Each text's label and scores from its windows' outputs (a text's windows are consecutive sequences)."""
        rows = answer.rows(answer.probabilities)
        reads, start = [], 0
        for e in encoded:
            end = start + len(e.windows)
            reads.append(self.reader.read(rows[start:end], [len(w) for w in e.windows]))
            start = end
        return reads

    def _predictions(self, encoded: Sequence[Encoded], reads: Sequence[Read], explanations: Sequence[dict | None]) -> list[Prediction]:
        return [
            Prediction(r.label, r.score, e.truncated, e.n_tokens, len(e.windows), e, x, r.scores)
            for e, r, x in zip(encoded, reads, explanations, strict=True)
        ]

    def _run(
        self, sequences: list, request_id: str, deadline: Deadline, explain: bool, queued: Callable[[], None], charge: Charge | None
    ) -> tuple[Sequence[float], float, Decision | None]:
        """Queue the sequences (charging ``charge``'s key), call ``queued``, wait for their answer's values; (values,
        seconds waited after queueing, the key's bucket after the charge)."""
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        key = os.urandom(16).hex()  # never the client's id: two clients may send the same one
        waiter = self.listener.expect(key)
        try:
            if not self.workers_alive():
                name, version = self.labels
                raise Unavailable(f"no inference worker is running for {name} v{version} (LOADING, or down): retry later", retry)
            left = deadline.left()
            if left <= 0:
                raise DeadlineExceeded(f"{deadline} passed before the request was queued")
            deadline_ms = int((time.time() + left) * 1000)
            bound, reply_to = self.settings.queue_max_requests, self.listener.reply_to
            rate = None
            if charge is None:
                self.queue.enqueue(key, sequences, deadline_ms, bound, reply_to, request_id, explain)
            else:
                rate = self.queue.enqueue_charged(charge, key, sequences, deadline_ms, bound, reply_to, request_id, explain)
            queued_at = time.perf_counter()
            queued()
            values = waiter.wait(deadline.at - queued_at)
        except QueueFull:
            raise Overloaded("too many requests waiting; retry later", retry) from None
        except RateLimitExceeded as exc:
            metrics.AUTH_REFUSALS.labels("rate_limited", exc.charge.name).inc()
            raise RateLimited(str(exc), exc.decision.headers()) from None
        except WorkerError as exc:
            raise Unavailable(f"the inference worker could not score this request: {exc}", retry) from None
        except redis.RedisError:
            metrics.REDIS_ERRORS.inc()
            raise Unavailable("the request queue (Redis) is unavailable", retry) from None
        except RedisUnavailable:  # counted by the listener
            raise Unavailable("the request queue (Redis) is unavailable", retry) from None
        finally:
            self.listener.forget(key)
        if values is None:
            raise DeadlineExceeded(f"no result within {deadline}")
        waited = time.perf_counter() - queued_at
        metrics.RESULT_WAIT_SECONDS.observe(waited)
        return values, waited, rate

    def workers_alive(self) -> bool:
        """Whether a worker of this version heartbeats (read from Redis at most once a second per process)."""
        now = time.monotonic()
        if now - self._workers_checked_at > 1.0:
            self._workers_alive = self.queue.live_workers(self.settings.heartbeat_ttl_s) > 0
            self._workers_checked_at = now
        return self._workers_alive

    @staticmethod
    def _observe_inputs(encoded: Sequence[Encoded]) -> None:
        metrics.TEXTS_RECEIVED.inc(len(encoded))
        metrics.REQUEST_TEXTS.observe(len(encoded))
        truncated = 0
        for e in encoded:
            metrics.TEXT_TOKENS.observe(e.n_tokens)
            metrics.TEXT_OOV.observe(e.n_oov / e.n_tokens)
            metrics.TEXT_WINDOWS.observe(len(e.windows))
            truncated += e.truncated
        if truncated:
            metrics.TEXTS_TRUNCATED.inc(truncated)

    def _observe_outputs(self, predictions: list[Prediction]) -> None:
        counts: dict[str, int] = {}
        scores = metrics.SCORES.labels(*self.labels)
        for p in predictions:
            scores.observe(p.score)
            counts[p.label] = counts.get(p.label, 0) + 1
        for label, count in counts.items():
            metrics.PREDICTIONS.labels(*self.labels, label).inc(count)
