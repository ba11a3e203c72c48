"""The Redis protocol between API processes and inference workers.

Requests: one Redis Stream per model version, ``<prefix>:requests:<name>:<version>``,
read by the consumer group ``workers``. One entry per HTTP request::

    r  request id (text)
    d  deadline, Unix time in milliseconds
    l  token count of each text: little-endian uint32 array
    t  token ids of all texts, concatenated: little-endian uint32 array

Workers acknowledge *and delete* an entry once answered, so the stream's length
is exactly the backlog (waiting + in progress): what the bounded enqueue checks
and what an autoscaler reads. An entry a worker took but never acknowledged is
taken over (XCLAIM) once it has been idle for ``claim_idle_ms`` and its worker
has stopped heartbeating: at-least-once delivery.

Results: a list per request, ``<prefix>:result:<request id>``, that the waiting
API thread BLPOPs; the value is ``b"P"`` + little-endian float32 probabilities,
or ``b"E"`` + a UTF-8 message. It expires after ``result_ttl_s`` in case
nobody waits any more.

Heartbeats: a sorted set ``<prefix>:workers:<name>:<version>`` of consumer names
scored by their last beat, plus ``<prefix>:worker:<consumer>`` with details.
"""

from __future__ import annotations

import json
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

GROUP = "workers"
_LITTLE_ENDIAN = sys.byteorder == "little"


class QueueFull(Exception):
    """The backlog reached its bound; the caller should answer 503."""


class WorkerError(Exception):
    """The worker could not answer this request (message is client-safe)."""


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


def _pack(values: Sequence, typecode: str) -> bytes:
    """Little-endian array bytes (``"I"``: uint32 token ids and lengths, ``"f"``: float32 scores)."""
    packed = array(typecode, values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _unpack(raw: bytes, typecode: str) -> array:
    values = array(typecode)
    values.frombytes(raw)
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values


@dataclass
class QueuedRequest:
    """A request as a worker sees it."""

    entry_id: str
    request_id: str
    deadline_ms: int
    sequences: list[array] = field(repr=False)

    @property
    def n_texts(self) -> int:
        return len(self.sequences)

    def expired(self, now_ms: float) -> bool:
        return now_ms >= self.deadline_ms


def encode_entry(request_id: str, sequences: Sequence[Sequence[int]], deadline_ms: int) -> dict[str, bytes | str | int]:
    flat = [token for sequence in sequences for token in sequence]
    return {"r": request_id, "d": deadline_ms, "l": _pack([len(s) for s in sequences], "I"), "t": _pack(flat, "I")}


def decode_entry(entry_id: str, fields: dict[bytes, bytes]) -> QueuedRequest:
    lengths = _unpack(fields[b"l"], "I")
    tokens = _unpack(fields[b"t"], "I")
    if sum(lengths) != len(tokens):
        raise ValueError(f"entry {entry_id}: lengths do not add up to the token count")
    sequences, start = [], 0
    for length in lengths:
        sequences.append(tokens[start : start + length])
        start += length
    return QueuedRequest(entry_id, fields[b"r"].decode(), int(fields[b"d"]), sequences)


# Bounded XADD: refuse, atomically, when the backlog is at its bound.
_ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'r', ARGV[2], 'd', ARGV[3], 'l', ARGV[4], 't', ARGV[5])
"""


class RequestQueue:
    """Both ends of the protocol for one model version."""

    stream_key_format = "{prefix}:requests:{name}:{version}"
    result_key_format = "{prefix}:result:{request_id}"
    workers_key_format = "{prefix}:workers:{name}:{version}"
    worker_info_key_format = "{prefix}:worker:{consumer}"

    def __init__(self, connection: redis.Redis, prefix: str, model_name: str, model_version: int):
        self.redis = connection
        self.prefix = prefix
        self.stream = self.stream_key_format.format(prefix=prefix, name=model_name, version=model_version)
        self.workers_key = self.workers_key_format.format(prefix=prefix, name=model_name, version=model_version)
        self._enqueue = connection.register_script(_ENQUEUE)

    def result_key(self, request_id: str) -> str:
        return self.result_key_format.format(prefix=self.prefix, request_id=request_id)

    # --- API side -----------------------------------------------------------------

    def enqueue(self, request_id: str, sequences: Sequence[Sequence[int]], deadline_ms: int, max_backlog: int) -> str:
        entry = encode_entry(request_id, sequences, deadline_ms)
        entry_id = self._enqueue(keys=[self.stream], args=[max_backlog, entry["r"], entry["d"], entry["l"], entry["t"]])
        if entry_id is None:
            raise QueueFull(self.stream)
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    def wait_result(self, request_id: str, timeout_s: float, connection: redis.Redis | None = None) -> list[float] | None:
        """Block until the worker answers; ``None`` when ``timeout_s`` passes first."""
        if timeout_s <= 0:
            return None
        # BLPOP takes a float timeout (Redis ≥ 6); 0 would mean "forever".
        popped = (connection or self.redis).blpop([self.result_key(request_id)], timeout=max(timeout_s, 0.001))
        if popped is None:
            return None
        payload = popped[1]
        if payload[:1] == b"E":
            raise WorkerError(payload[1:].decode("utf-8", "replace"))
        return list(_unpack(payload[1:], "f"))

    def backlog(self) -> int:
        return self.redis.xlen(self.stream)

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
        return self._decode(response[0][1]) if response else []

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
        return self._decode(claimed)

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

    def _decode(self, entries) -> list[QueuedRequest]:
        requests, broken = [], []
        for entry_id, fields in entries:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            try:
                requests.append(decode_entry(entry_id, fields))
            except (KeyError, ValueError):
                broken.append(entry_id)
        if broken:  # Nothing can answer a malformed entry; don't let it come back forever.
            self.finish(broken)
        return requests

    def respond(self, answers: Sequence[tuple[QueuedRequest, Sequence[float] | str]], result_ttl_s: int) -> None:
        """Deliver results (probabilities, or an error message) and retire their entries, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for request, answer in answers:
            key = self.result_key(request.request_id)
            payload = b"E" + answer.encode() if isinstance(answer, str) else b"P" + _pack(answer, "f")
            pipe.rpush(key, payload)
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
