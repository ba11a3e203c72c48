"""How an API process gets its results back: one listener thread, many waiting requests.

Each API process has one result list in Redis (`RequestQueue.results_key`) and
one thread (`ResultListener`) that pops whatever has arrived, many results per
round trip, and hands each to the request waiting for it (by its random key).
Blocking on a connection of its own per request would cost one connection and
one round trip per waiting request, and a blocking timeout that Redis rounds
to "forever" when it falls under a millisecond. A request thread waits on a lock with its own deadline,
so a deadline is kept to the millisecond without any Redis timeout, and holds
no connection while it waits.

If Redis goes away, the listener fails every waiting request at once (the API
answers 503), then reconnects with back-off.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

import redis

from service import metrics
from service.codec import decode_answer
from service.queue import RequestQueue

log = logging.getLogger("service.results")


class RedisUnavailable(Exception):
    """Redis failed while this request waited for its result."""


class Waiter:
    """One request's slot: the listener fills it, the request thread waits on it."""

    __slots__ = ("_done", "outcome")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.outcome: Sequence[float] | Exception | None = None

    def deliver(self, outcome: Sequence[float] | Exception) -> None:
        self.outcome = outcome
        self._done.release()

    def expire(self) -> None:
        """Never called: a waiting request forgets its key itself when its deadline passes."""

    def wait(self, timeout_s: float) -> Sequence[float] | None:
        """The answer's values (`service.codec.read_answer` reads them); ``None`` when ``timeout_s`` passes first;
        raises `WorkerError` or `RedisUnavailable`."""
        if timeout_s <= 0 or not self._done.acquire(timeout=timeout_s):
            return None
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Recipient(Protocol):
    """What a result is handed to: a waiting request's `Waiter`, or a shadow request's comparison."""

    def deliver(self, outcome: Sequence[float] | Exception) -> None: ...

    def expire(self) -> None: ...


class ResultListener:
    """The thread that pops this process's result list and wakes the waiting requests."""

    def __init__(self, queue: RequestQueue, connection: redis.Redis, block_s: float = 1.0):
        self.queue = queue
        self.connection = connection  # its own: a socket timeout longer than ``block_s``
        self.block_s = block_s
        self.reply_to = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._waiting: dict[str, Recipient] = {}
        self._expiring: dict[str, float] = {}  # key → time.perf_counter() after which nobody waits (shadow requests)
        self._next_sweep = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> ResultListener:
        self._thread = threading.Thread(target=self._run, name="result-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def expect(self, request_key: str, recipient: Recipient | None = None, expires_at: float | None = None) -> Recipient:
        """Register before enqueueing: the result may arrive before the request thread starts waiting. A request
        nobody waits for (a shadow's ``recipient``) gives ``expires_at`` (a `time.perf_counter` instant): past it,
        it is forgotten and told so (its ``expire()``)."""
        recipient = recipient or Waiter()
        self._waiting[request_key] = recipient
        if expires_at is not None:
            self._expiring[request_key] = expires_at
        return recipient

    def forget(self, request_key: str) -> None:
        """The request is over (answered, timed out or refused): a late result for it is dropped."""
        self._waiting.pop(request_key, None)
        self._expiring.pop(request_key, None)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                items = self.queue.pop_results(self.reply_to, self.block_s, connection=self.connection)
            except redis.RedisError as exc:
                failures += 1
                self._fail_all(exc)
                delay = min(0.05 * 2**failures, 2.0)
                if failures == 1:
                    log.warning("result listener: Redis unavailable (%s); retrying", type(exc).__name__)
                self._stop.wait(delay)
                continue
            except Exception:  # a malformed item must not stop the listener: every request would time out
                log.exception("result listener: unexpected error")
                continue
            if failures:
                log.info("result listener: Redis is back")
                failures = 0
            self._sweep()
            for item in items:
                try:
                    key, outcome = decode_answer(item)
                except (ValueError, UnicodeDecodeError):
                    log.warning("result listener: dropped a malformed result")
                    continue
                waiter = self._waiting.pop(key, None)
                if waiter is not None:  # None: the request gave up, or a duplicate answer (at-least-once)
                    self._expiring.pop(key, None)
                    waiter.deliver(outcome)

    def _sweep(self) -> None:
        """At most once a second: forget the requests nobody waits for whose deadline passed."""
        now = time.perf_counter()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key, expires_at in list(self._expiring.items()):
            if expires_at < now:
                self._expiring.pop(key, None)
                recipient = self._waiting.pop(key, None)
                if recipient is not None:
                    recipient.expire()

    def _fail_all(self, exc: Exception) -> None:
        metrics.REDIS_ERRORS.inc()
        for key in list(self._waiting):
            waiter = self._waiting.pop(key, None)
            if waiter is not None:
                waiter.deliver(RedisUnavailable(type(exc).__name__))
