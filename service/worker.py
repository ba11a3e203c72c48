"""Inference worker: pull micro-batches from Redis, run the model, push results back.

Run one per GPU (one on a CPU machine)::

    python -m service.worker

First SIGTERM/SIGINT: finish the batch in hand, acknowledge it, sign off, exit 0.
Second: exit at once (whatever it held is taken over by another worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

import redis

from service import compile_cache, metrics
from service.batching import BatchCollector, plan_model_calls
from service.config import Settings, load_settings
from service.logs import capture_native_stderr, configure_logging
from service.model_store import resolve
from service.queue import QueuedRequest, RequestQueue, connect

log = logging.getLogger("service.worker")


class InferenceWorker:
    """The loop: take over abandoned work, collect a batch, perform it; a thread heartbeats beside it."""

    def __init__(
        self, settings: Settings, model, queue: RequestQueue, consumer: str, device: str = "CPU", step_overhead_texts: float = 0.0
    ):
        self.settings = settings
        self.step_overhead_texts = step_overhead_texts
        self.model = model
        self.queue = queue
        self.consumer = consumer
        self.device = device
        self.collector = BatchCollector(
            max_texts=settings.max_batch_size,
            max_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            idle_block_s=settings.heartbeat_interval_s / 2,
        )
        self.stop_requested = False
        self.started_at = time.time()
        self.batches = 0
        self.texts = 0
        self.progress_at = time.monotonic()  # the loop's last turn: a stuck loop stops the heartbeat
        self.heartbeat_stop = threading.Event()
        self._group_checked = False
        self._next_claim = 0.0
        self._next_cleanup = 0.0

    # --- signals ---------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def request_stop(self, signum: int, _frame) -> None:
        if self.stop_requested:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        self.stop_requested = True

    # --- loop ------------------------------------------------------------------

    def run(self) -> int:
        log.info("worker %s serving %s v%s from %s", self.consumer, self.queue.stream, self.model.version.version, self.model.version.path)
        failures = 0
        beating = threading.Thread(target=self.beat_until_stopped, name="heartbeat", daemon=True)
        beating.start()
        while not self.stop_requested or self.collector.held_over:
            self.progress_at = time.monotonic()
            try:
                if not self._group_checked:
                    self.queue.ensure_group()
                    self._group_checked = True
                self.maybe_claim_abandoned()
                batch = self.collector.collect(self.fetch)
                if batch:
                    self.perform_batch(batch)
                failures = 0
            except redis.ResponseError as exc:  # e.g. NOGROUP: Redis restarted empty under a batch
                log.warning("Redis refused a command (%s); checking the stream and group again", exc)
                metrics.REDIS_ERRORS.inc()
                self._group_checked = False
                time.sleep(0.1)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                delay = min(0.25 * 2**failures, 5.0)
                log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
                metrics.REDIS_ERRORS.inc()
                self._group_checked = False  # Redis may have restarted empty
                time.sleep(delay)
        self.heartbeat_stop.set()
        beating.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.queue.sign_off(self.consumer)
        log.info("worker %s stopped after %d batches", self.consumer, self.batches)
        return 0

    def fetch(self, max_items: int, block_s: float | None) -> list[QueuedRequest]:
        if self.stop_requested:
            return []
        block_ms = None if block_s is None else max(1, int(block_s * 1000))
        return self.queue.read(self.consumer, count=max_items, block_ms=block_ms)

    def beat_until_stopped(self) -> None:
        """Heartbeat from its own thread, so that a long batch under load does not look like a
        dead worker; but only while the loop keeps turning, so that a stuck worker does."""
        stuck_after = 10 * self.settings.heartbeat_ttl_s
        while not self.heartbeat_stop.is_set():
            if time.monotonic() - self.progress_at < stuck_after:
                try:
                    self.heartbeat()
                except redis.RedisError as exc:
                    log.debug("heartbeat failed: %s", exc)
            else:
                log.error("the worker loop has not turned for %.0fs: no heartbeat until it does", stuck_after)
            self.heartbeat_stop.wait(self.settings.heartbeat_interval_s)

    def heartbeat(self) -> None:
        info = {
            "consumer": self.consumer,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "model": self.model.version.name,
            "version": self.model.version.version,
            "device": self.device,
            "started_at": self.started_at,
            "batches": self.batches,
            "texts": self.texts,
        }
        self.queue.heartbeat(self.consumer, info, self.settings.heartbeat_ttl_s)
        metrics.LAST_HEARTBEAT.set_to_current_time()

    def maybe_claim_abandoned(self) -> None:
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + self.settings.claim_idle_ms / 2000
        held = {request.entry_id for request in self.collector.held_over}
        claimed = self.queue.claim_abandoned(self.consumer, self.settings.claim_idle_ms, self.settings.heartbeat_ttl_s)
        claimed = [r for r in claimed if r.entry_id not in held]
        if claimed:
            log.warning("took over %d request(s) abandoned by another worker", len(claimed))
            metrics.REQUESTS_RECLAIMED.inc(len(claimed))
            self.collector.held_over.extendleft(reversed(claimed))
        if now >= self._next_cleanup:
            self._next_cleanup = now + 60
            self.queue.forget_dead_consumers(self.settings.heartbeat_ttl_s)

    def perform_batch(self, batch: list[QueuedRequest]) -> None:
        """Answer every request of ``batch`` (or retire it, if its deadline passed) and acknowledge it."""
        now_ms = time.time() * 1000
        expired = [r for r in batch if r.expired(now_ms)]
        live = [r for r in batch if not r.expired(now_ms)]
        if expired:
            metrics.REQUESTS_EXPIRED.inc(len(expired))
            self.queue.finish([r.entry_id for r in expired])
        answers: list[tuple[QueuedRequest, Sequence[float] | str]] = []
        runnable = []
        for request in live:
            if max((max(s, default=0) for s in request.sequences), default=0) >= self.model.vocab_size:
                answers.append((request, "token id outside the model's vocabulary"))
            else:
                runnable.append(request)
        model_s = padded = 0.0
        for request in runnable:
            metrics.QUEUE_WAIT_SECONDS.observe(max(now_ms - request.enqueued_ms, 0) / 1000)
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
        metrics.BATCHES.inc()
        log.info(
            "batch",
            extra={
                "requests": len(batch),
                "texts": sum(r.n_texts for r in runnable),
                "expired": len(expired),
                "padded_tokens": int(padded),
                "model_ms": round(model_s * 1000, 2),
                "request_ids": [r.log_id or r.request_id for r in batch],
            },
        )

    def run_model(
        self, requests: list[QueuedRequest], explain: bool = False
    ) -> tuple[list[tuple[QueuedRequest, Sequence[float] | str]], float, int]:
        """Score every sequence of ``requests`` in the model calls `plan_model_calls` chooses; (answers, model seconds,
        padded tokens). With ``explain``, an answer is the probabilities, then the logits, then every sequence's
        per-token contributions."""
        sequences = [sequence for request in requests for sequence in request.sequences]
        probabilities = [0.0] * len(sequences)
        logits = [0.0] * len(sequences)
        contributions: list[Sequence[float]] = [()] * len(sequences)
        model_s, padded = 0.0, 0
        try:
            lengths = [len(s) for s in sequences]
            budget = (self.settings.max_batch_size, self.settings.max_batch_tokens, self.step_overhead_texts)
            for call in plan_model_calls(lengths, *budget, padded_size=getattr(self.model, "padded_batch_size", None)):
                started = time.perf_counter()
                if explain:
                    scores, call_logits, weights = self.model.explain([sequences[i] for i in call])
                    for index, logit, row in zip(call, call_logits, weights, strict=True):
                        logits[index], contributions[index] = float(logit), row
                else:
                    scores = self.model.predict([sequences[i] for i in call])
                elapsed = time.perf_counter() - started
                call_padded = len(call) * max(lengths[i] for i in call)
                model_s += elapsed
                padded += call_padded
                metrics.MODEL_SECONDS.observe(elapsed)
                metrics.BATCH_TEXTS.observe(len(call))
                metrics.BATCH_TOKENS.observe(call_padded)
                metrics.PADDING_EFFICIENCY.observe(sum(max(lengths[i], 1) for i in call) / max(call_padded, 1))
                for index, score in zip(call, scores, strict=True):
                    probabilities[index] = float(score)
        except Exception:  # the model failed on this batch: answer it, keep serving the next
            log.exception("inference failed for %d request(s)", len(requests))
            metrics.INFERENCE_ERRORS.inc()
            return [(request, "inference failed") for request in requests], model_s, padded
        self.texts += len(sequences)
        metrics.TEXTS_SCORED.inc(len(sequences))
        answers, start = [], 0
        for request in requests:
            end = start + request.n_texts
            answer = probabilities[start:end]
            if explain:  # the layout `service.inference.explain_texts` reads
                metrics.TEXTS_EXPLAINED.inc(request.n_texts)
                answer += logits[start:end] + [float(c) for row in contributions[start:end] for c in row]
            answers.append((request, answer))
            start = end
        return answers, model_s, padded


def main() -> int:
    started = time.monotonic()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    capture_native_stderr()  # TensorFlow's own lines too, in the same format, its harmless "errors" at DEBUG
    if not settings.redis_url:
        sys.exit("SENTIMENT_REDIS_URL is not set (`make run` starts a Redis and sets it)")
    cache = compile_cache.configure(settings.compile_cache_dir)  # before TensorFlow reads its flags
    metrics.WARMUP_COMPILED.set(float("nan"))  # until the whole warm-up is over
    cached = compile_cache.entries(cache)
    from service.model import SentimentModel, configure_devices  # TensorFlow: workers only

    device = configure_devices(settings.tf_threads)
    version = resolve(settings.model_dir, settings.model_version)
    model = SentimentModel(version, device)
    # Every shape a batch can take compiles now (or loads from the cache), before the first heartbeat. Explanations
    # have programs of their own, half the total: they warm up once the worker serves (an explain request that
    # comes first pays for its shape itself: ~0.1 s from the cache, ~0.5 s without).
    metrics.WARMUP_SECONDS.set(model.warm_up(settings.max_batch_size))

    def warm_up_explanations() -> None:
        model.warm_up(settings.max_batch_size, explain=True)
        compiled = compile_cache.entries(cache) - cached
        metrics.WARMUP_COMPILED.set(compiled)
        log.info("compile cache %s: %d program(s) compiled, the others loaded", cache or "off", compiled)

    overhead = settings.step_overhead_texts
    if overhead is None:
        overhead = model.measure_step_overhead()
        log.info("one model step costs as much as %.1f texts: batches are split by length when that saves more", overhead)
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    if settings.worker_metrics_port:
        tokenizer = version.metadata.get("tokenizer", {}).get("scheme", "")
        worker_info = {"consumer": consumer, "device": device}
        try:
            metrics.serve_worker_metrics(
                settings.host, settings.worker_metrics_port, metrics.info_gauges(version.name, version.version, tokenizer, worker_info)
            )
            log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
        except OSError as exc:  # a busy port must not stop scoring: say so loudly instead
            log.error("worker metrics NOT served: port %d: %s", settings.worker_metrics_port, exc)
    connection = connect(settings.redis_url, settings.redis_timeout_s, blocking_s=settings.heartbeat_interval_s)
    queue = RequestQueue(connection, settings.redis_key_prefix, version.name, version.version)
    worker = InferenceWorker(settings, model, queue, consumer, device, overhead)
    worker.install_signal_handlers()
    metrics.STARTUP_SECONDS.set(time.monotonic() - started)  # the loop's first turn heartbeats at once
    threading.Thread(target=warm_up_explanations, name="warm-up", daemon=True).start()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
