"""The worker's loop: take over abandoned work, collect a batch, hand it to the runner; heartbeat beside it.

What performing a batch means (model calls, answers) is `service.worker.runner`'s,
which versions it holds `service.worker.versions`'s; this module is what keeps a
worker alive and fair in the queue: signals, the heartbeat thread, one version
after another (round robin, so that one backlog cannot starve another), taking
over what a dead worker held, Redis outages.

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
from service.queue import read_streams
from service.worker.versions import AVAILABLE, UNLOADING, Key, Slot, VersionLoader, observe

log = logging.getLogger("service.worker")


class InferenceWorker:
    """The loop: take over abandoned work, pick the next version with work, collect its batch, perform it; a thread
    heartbeats beside it. Versions come and go through ``loader`` (`service.worker.versions`)."""

    def __init__(self, settings: Settings, consumer: str, device: str = "CPU", loader: VersionLoader | None = None):
        self.settings = settings
        self.consumer = consumer
        self.device = device
        self.loader = loader
        self.slots: dict[Key, Slot] = {}
        self._beat_lock = threading.Lock()  # a version signed off is never heartbeated again after
        self._turn = 0  # round robin over the slots: one version's backlog cannot starve another's
        self.stop_requested = False
        self.started_at = time.time()
        self.progress_at = time.monotonic()  # the loop's last turn: a stuck loop stops the heartbeat
        self.heartbeat_stop = threading.Event()
        self._group_checked = False
        self._next_claim = 0.0
        self._next_cleanup = 0.0

    def add(self, slot: Slot) -> Slot:
        """Serve ``slot``'s version from the loop's next turn (its heartbeat makes it routable)."""
        self.slots[slot.key] = slot
        self._group_checked = False
        return slot

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
        log.info("worker %s serving %s", self.consumer, ", ".join(f"{n} v{v}" for n, v in self.slots))
        failures = 0
        self.progress_at = time.monotonic()  # loading the versions took a while: the loop starts turning now
        beating = threading.Thread(target=self.beat_until_stopped, name="heartbeat", daemon=True)
        beating.start()
        while not self.stop_requested or any(slot.collector.held_over for slot in self.slots.values()):
            self.progress_at = time.monotonic()
            try:
                self.sync_versions()
                if not self._group_checked:
                    for slot in self.slots.values():
                        slot.queue.ensure_group()
                    self._group_checked = True
                self.maybe_claim_abandoned()
                self.turn()
                failures = 0
            except redis.ResponseError as exc:  # e.g. NOGROUP: Redis restarted empty under a batch
                log.warning("Redis refused a command (%s); checking the streams and groups again", exc)
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
        for slot in self.slots.values():
            with contextlib.suppress(redis.RedisError):
                slot.queue.sign_off(self.consumer)
        log.info("worker %s stopped after %d batches", self.consumer, sum(s.runner.batches for s in self.slots.values()))
        return 0

    def turn(self) -> None:
        """One batch of the next version that has work; when none has, wait for any (blocking, every stream at once)."""
        slot = self._next_with_work()
        if slot is None:
            if self.stop_requested or not self.slots:
                time.sleep(0.05 if not self.slots else 0)
                return
            block_ms = max(1, int(self.settings.heartbeat_interval_s / 2 * 1000))
            self._distribute(read_streams([s.queue for s in self.slots.values()], self.consumer, self.settings.max_batch_size, block_ms))
            slot = self._next_with_work()
            if slot is None:
                return
        batch = slot.collector.collect(lambda n, _: [] if self.stop_requested else slot.queue.read(self.consumer, n, None))
        if batch:
            slot.runner.perform(batch)

    def _next_with_work(self) -> Slot | None:
        slots = list(self.slots.values())
        for offset in range(len(slots)):
            slot = slots[(self._turn + offset) % len(slots)]
            if slot.collector.held_over:
                self._turn = (self._turn + offset + 1) % len(slots)
                return slot
        return None

    def _distribute(self, by_stream: dict[str, list[QueuedRequest]]) -> None:
        for slot in self.slots.values():
            slot.collector.held_over.extend(by_stream.get(slot.queue.stream, []))

    def sync_versions(self) -> None:
        """Take the versions loaded since the last turn; drain the ones the config dropped, free them once drained."""
        if self.loader is None:
            return
        for slot in self.loader.take_ready():
            self.add(slot)
            log.info("serving %s v%s", *slot.key)
        now = time.monotonic()
        for key, slot in list(self.slots.items()):
            if key in self.loader.wanted:
                slot.state, slot.empty_since = AVAILABLE, None  # back in the config before it was freed
                continue
            if slot.state != UNLOADING:
                slot.state = UNLOADING
                log.info("unloading %s v%s: answering what is queued for it first", *key)
            if slot.collector.held_over or slot.queue.backlog():
                slot.empty_since = None
            elif slot.empty_since is None:
                slot.empty_since = now
            elif now - slot.empty_since >= self.settings.unload_grace_s:
                with self._beat_lock:
                    del self.slots[key]
                    slot.queue.sign_off(self.consumer)
                self.loader.release(key)
                log.info("unloaded %s v%s", *key)
        observe(self.slots, self.loader.loading())

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
        """Say, for every version held (serving or draining), that this worker is alive."""
        with self._beat_lock:
            self._heartbeat(list(self.slots.values()))
        metrics.LAST_HEARTBEAT.set_to_current_time()

    def _heartbeat(self, slots: list[Slot]) -> None:
        info = {
            "consumer": self.consumer,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "versions": {f"{n}:{v}": slot.state for (n, v), slot in zip([s.key for s in slots], slots, strict=True)},
            "device": self.device,
            "started_at": self.started_at,
            "batches": sum(slot.runner.batches for slot in slots),
            "texts": sum(slot.runner.texts for slot in slots),
        }
        for slot in slots:
            slot.queue.heartbeat(self.consumer, info, self.settings.heartbeat_ttl_s)

    def maybe_claim_abandoned(self) -> None:
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + self.settings.claim_idle_ms / 2000
        cleanup = now >= self._next_cleanup
        if cleanup:
            self._next_cleanup = now + 60
        for slot in self.slots.values():
            held = {request.entry_id for request in slot.collector.held_over}
            claimed = slot.queue.claim_abandoned(self.consumer, self.settings.claim_idle_ms, self.settings.heartbeat_ttl_s)
            claimed = [r for r in claimed if r.entry_id not in held]
            if claimed:
                log.warning("took over %d request(s) of %s v%s abandoned by another worker", len(claimed), *slot.key)
                metrics.REQUESTS_RECLAIMED.labels(*slot.runner.labels).inc(len(claimed))
                slot.collector.held_over.extendleft(reversed(claimed))
            if cleanup:
                slot.queue.forget_dead_consumers(self.settings.heartbeat_ttl_s)
