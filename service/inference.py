"""The one inference path that every protocol's routes call: texts → token ids → queue → worker → scores.

`/predict`, the TensorFlow Serving and the KServe v2 front doors only parse
their own request format and shape their own responses; validation limits,
tokenizing, deadlines, back-pressure, the wait for the worker and the metrics
of what goes in and out are here, once. No route reaches the model any other
way than through the Redis queue.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import islice

import redis
from flask import current_app, g

from service import metrics
from service.config import Settings
from service.errors import BadRequest, DeadlineExceeded, Overloaded, PayloadTooLarge, Unavailable
from service.model_store import ModelVersion
from service.queue import QueueFull, RequestQueue, WorkerError
from service.results import RedisUnavailable, ResultListener
from service.tokenizer import Encoded, LongTextPolicy, Tokenizer, combine, split_words_with_spans


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

    def as_dict(self) -> dict:
        answer = {
            "label": self.label,
            "score": round(self.score, 6),
            "truncated": self.truncated,
            "tokens": self.tokens,
            "windows": self.windows,
        }
        if self.explanation is not None:
            answer["explanation"] = self.explanation
        return answer


def serving_tokenizer(model: ModelVersion, settings: Settings) -> Tokenizer:
    """The served version's tokenizer, reading long texts as the settings say (the version's policy by default)."""
    tokenizer = model.load_tokenizer()
    policy = tokenizer.long_texts
    if settings.long_text_policy == "head_tail":
        policy = LongTextPolicy("head_tail", tokenizer.max_length)
    elif settings.max_windows_per_text and policy.kind == "windows":
        policy = replace(policy, max_windows=settings.max_windows_per_text)
    return tokenizer.with_policy(policy)


@dataclass
class Inference:
    """What the routes of one API process share: settings, the served model's tokenizer, the queue, the listener."""

    settings: Settings
    model: ModelVersion
    tokenizer: Tokenizer
    queue: RequestQueue
    listener: ResultListener
    workers_alive: bool = True
    workers_checked_at: float = 0.0

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

    def predict(self, texts: list[str], budget_s: float, explain: bool = False) -> list[Prediction]:
        """Score checked ``texts`` within ``budget_s`` seconds, through the queue and a worker (with ``explain``,
        each with the split of its logit over its tokens)."""
        give_up_at = time.perf_counter() + budget_s
        encoded = self.tokenizer.encode_batch(texts)
        sequences = [window for e in encoded for window in e.windows]
        if len(sequences) > self.settings.max_windows_per_request:
            raise PayloadTooLarge(
                f"these texts need {len(sequences)} windows of the model's input; the limit per request is "
                f"{self.settings.max_windows_per_request}: send the long texts in separate requests"
            )
        self._observe_inputs(encoded)
        g.scored = scored = {  # for the access log
            "texts": len(encoded),
            "tokens": sum(e.n_tokens for e in encoded),
            "truncated": sum(e.truncated for e in encoded),
            "windows": len(sequences),
        }
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        key = os.urandom(16).hex()  # never the client's id: two clients may send the same one
        waiter = self.listener.expect(key)
        try:
            if not self._workers_alive():
                raise Unavailable("no inference worker is running for this model", retry)
            if time.perf_counter() >= give_up_at:
                raise DeadlineExceeded(f"the deadline of {budget_s * 1000:.0f} ms passed before the request was queued")
            deadline_ms = int((time.time() + (give_up_at - time.perf_counter())) * 1000)
            queue_args = (self.settings.queue_max_requests, self.listener.reply_to, g.request_id, explain)
            self.queue.enqueue(key, sequences, deadline_ms, *queue_args)
            queued_at = time.perf_counter()
            probabilities = waiter.wait(give_up_at - queued_at)
        except QueueFull:
            raise Overloaded("too many requests waiting; retry later", retry) from None
        except WorkerError as exc:
            raise Unavailable(f"the inference worker could not score this request: {exc}", retry) from None
        except redis.RedisError:
            metrics.REDIS_ERRORS.inc()
            raise Unavailable("the request queue (Redis) is unavailable", retry) from None
        except RedisUnavailable:  # counted by the listener
            raise Unavailable("the request queue (Redis) is unavailable", retry) from None
        finally:
            self.listener.forget(key)
        if probabilities is None:
            raise DeadlineExceeded(f"no result within the deadline of {budget_s * 1000:.0f} ms")
        if explain:
            metrics.EXPLAIN_REQUESTS.inc()
        waited = time.perf_counter() - queued_at
        metrics.RESULT_WAIT_SECONDS.observe(waited)
        scored["queue_wait_ms"] = round(waited * 1000, 2)
        negative, positive = self.model.label_names
        threshold = self.model.threshold
        aggregate = self.tokenizer.long_texts.aggregate
        explanations = explain_texts(self.tokenizer, texts, encoded, probabilities) if explain else [None] * len(texts)
        predictions, start = [], 0
        for e, explanation in zip(encoded, explanations, strict=True):  # a text's windows are consecutive sequences
            end = start + len(e.windows)
            p = combine(probabilities[start:end], [len(w) for w in e.windows], aggregate)
            label = positive if p >= threshold else negative
            predictions.append(Prediction(label, p, e.truncated, e.n_tokens, len(e.windows), e, explanation))
            start = end
        self._observe_outputs(predictions, negative, positive)
        return predictions

    def _workers_alive(self) -> bool:
        """At most one Redis call per second per process: is any worker heartbeating?"""
        now = time.monotonic()
        if now - self.workers_checked_at > 1.0:
            self.workers_alive = self.queue.live_workers(self.settings.heartbeat_ttl_s) > 0
            self.workers_checked_at = now
        return self.workers_alive

    @staticmethod
    def _observe_inputs(encoded) -> None:
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

    @staticmethod
    def _observe_outputs(predictions: list[Prediction], negative: str, positive: str) -> None:
        positives = 0
        for p in predictions:
            metrics.SCORES.observe(p.score)
            positives += p.label == positive
        if positives:
            metrics.PREDICTIONS.labels(positive).inc(positives)
        if positives < len(predictions):
            metrics.PREDICTIONS.labels(negative).inc(len(predictions) - positives)


EXPLANATION_METHOD = "gradient_x_input"


def explain_texts(tokenizer: Tokenizer, texts: list[str], encoded: list[Encoded], answer: list[float]) -> list[dict]:
    """Each text's explanation from a worker's explain answer, which is: every sequence's probability, then its
    logit, then its tokens' weights (gradient × input of their word vectors; sequences in order). A text read in
    ``k`` windows has the mean of their logits as its own, so each weight counts ``1/k``; tokens that were not read
    (the middle of a text past the window bound) have none."""
    n_sequences = sum(len(e.windows) for e in encoded)
    logits = answer[n_sequences : 2 * n_sequences]
    weights_read = iter(answer[2 * n_sequences :])
    explanations, sequence = [], 0
    for text, e in zip(texts, encoded, strict=True):
        k = len(e.windows)
        weights = list(islice(weights_read, sum(map(len, e.windows))))
        logit = math.fsum(logits[sequence : sequence + k]) / k
        sequence += k
        spans = split_words_with_spans(text)  # none for a text without a token (read as one OOV id)
        if spans and not e.truncated:  # every token read, in order: the common case, one pass
            tokens = [
                {"token": token, "start": start, "end": end, "weight": round(weight / k, 6), "read": True}
                for (token, start, end), weight in zip(spans, weights, strict=True)
            ]
        else:
            by_position = dict(zip(tokenizer.read_positions(e.n_tokens), weights, strict=True)) if spans else {}
            tokens = []
            for position, (token, start, end) in enumerate(spans):
                weight = by_position.get(position)
                read = weight is not None
                tokens.append({"token": token, "start": start, "end": end, "weight": round(weight / k, 6) if read else None, "read": read})
        explanations.append({"method": EXPLANATION_METHOD, "logit": round(logit, 6), "tokens": tokens})
    return explanations


def inference() -> Inference:
    """The current process's inference path (built by `service.app.create_app`)."""
    return current_app.extensions["sentiment"]
