"""How a worker performs one formed batch: drop what expired, plan the model calls, run them, answer, retire.

Written against `ScoringModel`, the little a batch needs of a model, so that
the TensorFlow model (`service.worker.model.SentimentModel`), the benchmark's
free model and the tests' fakes all run through the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from service import metrics
from service.codec import Answer, QueuedRequest
from service.config import Settings
from service.model_store import ModelVersion
from service.queue import RequestQueue
from service.worker.batching import plan_model_calls

log = logging.getLogger("service.worker")

Answered = tuple[QueuedRequest, Answer | str]  # a request and its answer, or the error message it gets


class ScoringModel(Protocol):
    """What the batch runner needs of a model version."""

    version: ModelVersion
    vocab_size: int

    def predict(self, sequences: Sequence[Sequence[int]]) -> Sequence:
        """For each sequence of token ids: the probability of the positive label (a two-label model), or the
        probabilities of its k labels (a k-label model, ``version.classes`` k)."""

    def explain(self, sequences: Sequence[Sequence[int]]) -> tuple[Sequence, Sequence, list[Sequence]]:
        """Probabilities, logits (k each for a k-label model), and each sequence's per-token contributions to its
        logit (``[tokens]``; ``[tokens, k]`` for a k-label model)."""

    def padded_batch_size(self, texts: int) -> int:
        """Rows a call of ``texts`` texts really computes (a compiled graph pads to fixed batch sizes)."""


class BatchRunner:
    """Runs batches of one model version and answers them through its queue."""

    def __init__(self, settings: Settings, model: ScoringModel, queue: RequestQueue, step_overhead_texts: float = 0.0):
        self.settings = settings
        self.model = model
        self.queue = queue
        self.step_overhead_texts = step_overhead_texts
        self.batches = 0
        self.texts = 0
        self.labels = (model.version.name, str(model.version.version))  # of its metrics
        for counter in (metrics.BATCHES, metrics.TEXTS_SCORED, metrics.TEXTS_EXPLAINED, metrics.REQUESTS_EXPIRED):
            counter.labels(*self.labels)  # exported as 0 from the start, so that a rate over them has a value
        for counter in (metrics.REQUESTS_RECLAIMED, metrics.INFERENCE_ERRORS):
            counter.labels(*self.labels)

    def perform(self, batch: list[QueuedRequest]) -> None:
        """Answer every request of ``batch`` (or retire it, if its deadline passed) and acknowledge it."""
        now_ms = time.time() * 1000
        expired = [r for r in batch if r.expired(now_ms)]
        live = [r for r in batch if not r.expired(now_ms)]
        if expired:
            metrics.REQUESTS_EXPIRED.labels(*self.labels).inc(len(expired))
            self.queue.finish([r.entry_id for r in expired])
        answers: list[Answered] = []
        runnable = []
        for request in live:
            if max((max(s, default=0) for s in request.sequences), default=0) >= self.model.vocab_size:
                answers.append((request, "token id outside the model's vocabulary"))
            else:
                runnable.append(request)
        for request in runnable:
            metrics.QUEUE_WAIT_SECONDS.labels(*self.labels).observe(max(now_ms - request.enqueued_ms, 0) / 1000)
        model_s = padded = 0.0
        for explain in (False, True):  # explanations take a graph of their own: their own model calls
            group = [r for r in runnable if r.explain == explain]
            if group:
                scored, group_s, group_padded = self.run_model(group, explain)
                answers.extend(scored)
                model_s += group_s
                padded += group_padded
        if answers:
            self.queue.respond(answers, self.settings.result_ttl_s)
        self.batches += 1
        metrics.BATCHES.labels(*self.labels).inc()
        log.info(
            "batch",
            extra={
                "requests": len(batch),
                "texts": sum(r.n_texts for r in runnable),
                "expired": len(expired),
                "padded_tokens": int(padded),
                "model_ms": round(model_s * 1000, 2),
                "request_ids": [r.request_id or r.key for r in batch],
            },
        )

    def run_model(self, requests: list[QueuedRequest], explain: bool = False) -> tuple[list[Answered], float, int]:
        """Score every sequence of ``requests`` in the model calls `plan_model_calls` chooses; (answers, model seconds,
        padded tokens). A model that fails answers each request with an error, and the worker serves on."""
        sequences = [sequence for request in requests for sequence in request.sequences]
        probabilities: list[list[float]] = [[]] * len(sequences)  # k values per sequence (k = 1: two labels)
        logits: list[list[float]] = [[]] * len(sequences)
        contributions: list[list[float]] = [[]] * len(sequences)  # a token's k contributions after another's
        model_s, padded = 0.0, 0
        try:
            lengths = [len(s) for s in sequences]
            budget = (self.settings.max_batch_size, self.settings.max_batch_tokens, self.step_overhead_texts)
            for call in plan_model_calls(lengths, *budget, padded_size=self.model.padded_batch_size):
                started = time.perf_counter()
                if explain:
                    scores, call_logits, weights = self.model.explain([sequences[i] for i in call])
                    for index, logit, row in zip(call, call_logits, weights, strict=True):
                        logits[index], contributions[index] = flat(logit), flat(row)
                else:
                    scores = self.model.predict([sequences[i] for i in call])
                elapsed = time.perf_counter() - started
                call_padded = len(call) * max(lengths[i] for i in call)
                model_s += elapsed
                padded += call_padded
                metrics.MODEL_SECONDS.labels(*self.labels).observe(elapsed)
                metrics.BATCH_TEXTS.labels(*self.labels).observe(len(call))
                metrics.BATCH_TOKENS.labels(*self.labels).observe(call_padded)
                metrics.PADDING_EFFICIENCY.labels(*self.labels).observe(sum(max(lengths[i], 1) for i in call) / max(call_padded, 1))
                for index, score in zip(call, scores, strict=True):
                    probabilities[index] = flat(score)
        except Exception:  # the model failed on this batch: answer it, keep serving the next
            log.exception("inference failed for %d request(s)", len(requests))
            metrics.INFERENCE_ERRORS.labels(*self.labels).inc()
            return [(request, "inference failed") for request in requests], model_s, padded
        self.texts += len(sequences)
        metrics.TEXTS_SCORED.labels(*self.labels).inc(len(sequences))
        if explain:
            metrics.TEXTS_EXPLAINED.labels(*self.labels).inc(len(sequences))
        k = self.model.version.classes
        answers, start = [], 0
        for request in requests:
            end = start + request.n_texts
            values = [v for row in probabilities[start:end] for v in row]
            if explain:
                answer = Answer(values, [v for row in logits[start:end] for v in row], contributions[start:end], k)
            else:
                answer = Answer(values, classes=k)
            answers.append((request, answer))
            start = end
        return answers, model_s, padded


def flat(values) -> list[float]:
    """A model's output for one sequence as plain floats: a number, or an array of any shape, row-major."""
    if isinstance(values, float | int):
        return [float(values)]
    if hasattr(values, "ravel"):
        return [float(v) for v in values.ravel()]
    return [float(v) for v in values]
