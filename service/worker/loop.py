"""The worker's loop: take over abandoned work, collect a batch, hand it to the runner; heartbeat beside it.

What performing a batch means (model calls, answers) is `service.worker.runner`'s;
this module is what keeps a worker alive and fair in the queue: signals, the
heartbeat thread, taking over what a dead worker held, Redis outages.

First SIGTERM/SIGINT: finish the batch in hand, acknowledge it, sign off, exit 0.
Second: exit at once (whatever it held is taken over by another worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import redis

from service import metrics
from service.codec import QueuedRequest
from service.config import Settings
from service.worker.batching import BatchCollector
from service.worker.runner import BatchRunner

log = logging.getLogger("service.worker")


class InferenceWorker:
    """The loop: take over abandoned work, collect a batch, perform it; a thread heartbeats beside it."""

    def __init__(self, settings: Settings, runner: BatchRunner, consumer: str, device: str = "CPU"):
        self.settings = settings
        self.runner = runner
        self.model = runner.model
        self.queue = runner.queue
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
                    self.runner.perform(batch)
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
        log.info("worker %s stopped after %d batches", self.consumer, self.runner.batches)
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
            "batches": self.runner.batches,
            "texts": self.runner.texts,
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
