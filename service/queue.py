"""The Redis side of the protocol between API processes and inference workers: which keys, which commands.

What an entry and an answer are as bytes is `service.codec`'s; this module only
moves them.

Requests: one Redis Stream per model version, ``<prefix>:requests:<name>:<version>``,
read by the consumer group ``workers``, one entry per HTTP request. Workers
acknowledge *and delete* an entry once answered, so the stream's length is
exactly the backlog (waiting + in progress): what the bounded enqueue checks
and what an autoscaler reads. An entry a worker took but never acknowledged is
taken over (XCLAIM) once it has been idle for ``claim_idle_ms`` and its worker
has stopped heartbeating: at-least-once delivery.

Results: one list per API process, ``<prefix>:results:<reply-to>``, which one
thread of that process pops (`pop_results`) and hands to the request threads
waiting for them (`service.results`). So a waiting request holds no Redis
connection, a worker answers a whole batch with one RPUSH per API process, and
the API reads many results per round trip. A list expires ``result_ttl_s``
after its last push, in case its process is gone.

Heartbeats: a sorted set ``<prefix>:workers:<name>:<version>`` of consumer names
scored by their last beat, plus ``<prefix>:worker:<consumer>`` with details.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.codec import Answer, QueuedRequest, decode_request, encode_answer, encode_request
from service.queue_scripts import ENQUEUE, ENQUEUE_CHARGED, STATE
from service.rate_limit import Charge, Decision, RateLimitExceeded

GROUP = "workers"


class QueueFull(Exception):
    """The backlog reached its bound; the caller should answer 503."""


def connect(url: str, timeout_s: float, blocking_s: float = 0.0, max_connections: int | None = None) -> redis.Redis:
    """A client that fails fast when Redis is away (one immediate retry, for a pooled
    connection that went stale across a Redis restart), instead of redis-py's
    default of ten retries with back-off.

    ``blocking_s`` is the longest blocking command the client will send (BLPOP):
    its socket timeout must outlast it.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s + blocking_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        max_connections=max_connections,
    )


def _request_fields(
    key: str, sequences: Sequence[Sequence[int]], deadline_ms: int, max_backlog: int, reply_to: str, request_id: str, explain: bool
) -> list:
    """ARGV[1..8] of both enqueue scripts: the bound, then the request's fields in the scripts' order."""
    e = encode_request(key, sequences, deadline_ms, reply_to, request_id, explain)
    return [max_backlog, e["r"], e["i"], e["a"], e["d"], e["x"], e["l"], e["t"]]


# The shortest blocking timeout ever sent: Redis 6.2 reads BLPOP's 0.001 as 0, which means "forever".
MIN_BLOCK_S = 0.01


class RequestQueue:
    """Both ends of the protocol for one model version."""

    stream_key_format = "{prefix}:requests:{name}:{version}"
    results_key_format = "{prefix}:results:{reply_to}"
    workers_key_format = "{prefix}:workers:{name}:{version}"
    worker_info_key_format = "{prefix}:worker:{consumer}"

    def __init__(self, connection: redis.Redis, prefix: str, model_name: str, model_version: int):
        self.redis = connection
        self.prefix = prefix
        self.stream = self.stream_key_format.format(prefix=prefix, name=model_name, version=model_version)
        self.workers_key = self.workers_key_format.format(prefix=prefix, name=model_name, version=model_version)
        self._enqueue = connection.register_script(ENQUEUE)
        self._enqueue_charged = connection.register_script(ENQUEUE_CHARGED)
        self._state = connection.register_script(STATE)

    def _evalsha(self, script, keys: list[str], args: list) -> object:
        """Run a registered script: EVALSHA straight through execute_command (the hot path skips redis-py's Script
        wrappers); on a restarted (or another) Redis, load it, once."""
        try:
            return self.redis.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return script(keys=keys, args=args)

    def results_key(self, reply_to: str) -> str:
        return self.results_key_format.format(prefix=self.prefix, reply_to=reply_to)

    # --- API side -----------------------------------------------------------------

    def enqueue(
        self,
        key: str,
        sequences: Sequence[Sequence[int]],
        deadline_ms: int,
        max_backlog: int,
        reply_to: str,
        request_id: str = "",
        explain: bool = False,
    ) -> str:
        """Queue a request whose answer goes to ``reply_to``'s list under ``key``; `QueueFull` at the bound (one round trip)."""
        args = _request_fields(key, sequences, deadline_ms, max_backlog, reply_to, request_id, explain)
        entry_id = self._evalsha(self._enqueue, [self.stream], args)
        if entry_id is None:
            raise QueueFull(self.stream)
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    def enqueue_charged(
        self,
        charge: Charge,
        key: str,
        sequences: Sequence[Sequence[int]],
        deadline_ms: int,
        max_backlog: int,
        reply_to: str,
        request_id: str = "",
        explain: bool = False,
    ) -> Decision:
        """`enqueue`, charging ``charge``'s key in the same round trip: its bucket's `Decision`; `RateLimitExceeded`
        over the key's rate (nothing queued), `QueueFull` at the bound (nothing charged)."""
        args = _request_fields(key, sequences, deadline_ms, max_backlog, reply_to, request_id, explain) + charge.args()
        answer = self._evalsha(self._enqueue_charged, [self.stream, charge.bucket(self.prefix)], args)
        if answer is None:
            raise QueueFull(self.stream)
        queued, left, wait_or_id = answer
        if not queued:
            raise RateLimitExceeded(charge, Decision.of(charge, 0, left, wait_or_id))
        return Decision.of(charge, 1, left, 0)

    def pop_results(self, reply_to: str, block_s: float, most: int = 1024, connection: redis.Redis | None = None) -> list[bytes]:
        """Results waiting in ``reply_to``'s list: block up to ``block_s`` for the first, then take up to ``most`` more.

        The blocking timeout is never below `MIN_BLOCK_S`, which Redis could round to 0 ("block forever");
        ``connection``'s socket timeout must outlast it.
        """
        client = connection or self.redis
        key = self.results_key(reply_to)
        first = client.blpop([key], timeout=max(block_s, MIN_BLOCK_S))
        if first is None:
            return []
        return [first[1], *(client.lpop(key, most) or [])]

    def backlog(self) -> int:
        return self.redis.xlen(self.stream)

    def state(self, live_ttl_s: float) -> dict[str, float]:
        """Backlog, pending entries, age of the oldest waiting entry (seconds) and live workers, read atomically."""
        backlog, pending, age_ms, live = self._state(keys=[self.stream, self.workers_key], args=[GROUP, time.time() - live_ttl_s])
        return {"queue_backlog": backlog, "queue_pending": pending, "queue_oldest_waiting_age_seconds": age_ms / 1000, "live_workers": live}

    def live_workers(self, ttl_s: float) -> int:
        return self.redis.zcount(self.workers_key, time.time() - ttl_s, "+inf")

    def live_consumers(self, ttl_s: float) -> set[bytes]:
        """Names of the workers that heartbeated within ``ttl_s``."""
        return set(self.redis.zrangebyscore(self.workers_key, time.time() - ttl_s, "+inf"))

    # --- worker side -------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and group if missing (after a Redis restart, say); start at 0 so nothing queued is skipped."""
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[QueuedRequest]:
        """New entries for ``consumer``: up to ``count``, waiting up to ``block_ms`` (None: don't wait)."""
        try:
            response = self.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        return self.decode_entries(response[0][1]) if response else []

    def claim_abandoned(self, consumer: str, min_idle_ms: int, live_ttl_s: float, count: int = 256) -> list[QueuedRequest]:
        """Take over entries held for ``min_idle_ms`` or more by workers that stopped heartbeating.

        A live worker's slow batch is left alone: taking it would only double the
        work at the moment the workers are overloaded.
        """
        try:
            pending = self.redis.xpending_range(self.stream, GROUP, "-", "+", count, idle=min_idle_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        if not pending:
            return []
        live = self.live_consumers(live_ttl_s)
        orphans = [p["message_id"] for p in pending if p["consumer"] not in live]
        if not orphans:
            return []
        entries = self.redis.xclaim(self.stream, GROUP, consumer, min_idle_ms, orphans)
        claimed = [(entry_id, fields) for entry_id, fields in entries if fields]
        gone = set(orphans) - {entry_id for entry_id, _ in claimed}  # deleted meanwhile: drop from the pending list
        if gone:
            self.redis.xack(self.stream, GROUP, *gone)
        return self.decode_entries(claimed)

    def forget_dead_consumers(self, live_ttl_s: float, idle_ms: int = 600_000) -> int:
        """Remove long-gone workers with nothing pending from the group (autoscaling leaves many)."""
        live = self.live_consumers(live_ttl_s)
        removed = 0
        for info in self.redis.xinfo_consumers(self.stream, GROUP):
            name = info["name"] if isinstance(info["name"], bytes) else str(info["name"]).encode()
            if info["pending"] == 0 and info["idle"] >= idle_ms and name not in live:
                self.redis.xgroup_delconsumer(self.stream, GROUP, name)
                removed += 1
        return removed

    def decode_entries(self, entries) -> list[QueuedRequest]:
        requests, broken = [], []
        for entry_id, fields in entries:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                requests.append(decode_request(entry_id, fields))
            except (KeyError, ValueError):
                broken.append(entry_id)
        if broken:  # Nothing can answer a malformed entry; don't let it come back forever.
            self.finish(broken)
        return requests

    def respond(self, answers: Sequence[tuple[QueuedRequest, Answer | str]], result_ttl_s: int) -> None:
        """Deliver answers (or error messages) and retire their entries, in one round trip:
        one RPUSH per API process that waits for some of them."""
        by_list: dict[str, list[bytes]] = {}
        for request, answer in answers:
            by_list.setdefault(self.results_key(request.reply_to), []).append(encode_answer(request.key, answer))
        pipe = self.redis.pipeline(transaction=False)
        for key, items in by_list.items():
            pipe.rpush(key, *items)
            pipe.expire(key, result_ttl_s)
        self._retire(pipe, [request.entry_id for request, _ in answers])
        pipe.execute()

    def finish(self, entry_ids: Sequence[str]) -> None:
        """Retire entries without answering (their deadline passed: the API has already answered 504)."""
        if entry_ids:
            pipe = self.redis.pipeline(transaction=False)
            self._retire(pipe, entry_ids)
            pipe.execute()

    def _retire(self, pipe, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            pipe.xack(self.stream, GROUP, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)

    def heartbeat(self, consumer: str, info: dict, ttl_s: float) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.workers_key, {consumer: now})
        pipe.zremrangebyscore(self.workers_key, "-inf", now - 10 * ttl_s)
        pipe.set(self.worker_info_key_format.format(prefix=self.prefix, consumer=consumer), json.dumps(info), ex=max(1, int(ttl_s)))
        pipe.execute()

    def sign_off(self, consumer: str) -> None:
        """A worker stopping cleanly leaves the live set at once."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.workers_key, consumer)
        pipe.delete(self.worker_info_key_format.format(prefix=self.prefix, consumer=consumer))
        pipe.execute()


def read_streams(queues: Sequence[RequestQueue], consumer: str, count: int, block_ms: int) -> dict[str, list[QueuedRequest]]:
    """New entries of several versions' streams in one XREADGROUP, waiting up to ``block_ms`` for the first of any;
    up to ``count`` per stream, by stream. A worker serving several versions waits on all of them at once."""
    if not queues:
        return {}
    by_stream = {queue.stream: queue for queue in queues}
    try:
        response = queues[0].redis.xreadgroup(GROUP, consumer, dict.fromkeys(by_stream, ">"), count=count, block=block_ms)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        for queue in queues:
            queue.ensure_group()
        return {}
    read = {}
    for stream, entries in response or []:
        name = stream.decode() if isinstance(stream, bytes) else stream
        read[name] = by_stream[name].decode_entries(entries)
    return read
