"""The Redis protocol, against a real Redis server of the test's own."""

from __future__ import annotations

import time

import pytest
import redis

from service.codec import Answer, WorkerError, decode_answer, encode_request
from service.queue import QueueFull, RequestQueue, connect


@pytest.fixture
def queue(redis_server) -> RequestQueue:
    q = RequestQueue(connect(redis_server.url, 0.5, blocking_s=5), "test", "sentiment", 3)
    q.ensure_group()
    return q


def deadline(seconds: float = 5.0) -> int:
    return int((time.time() + seconds) * 1000)


def enqueue(queue: RequestQueue, key: str, sequences, deadline_ms: int | None = None, max_backlog: int = 10, reply_to="api-1"):
    return queue.enqueue(key, sequences, deadline() if deadline_ms is None else deadline_ms, max_backlog, reply_to)


def results(queue: RequestQueue, reply_to: str = "api-1", block_s: float = 1.0) -> dict:
    answers = {}
    for item in queue.pop_results(reply_to, block_s):
        key, outcome = decode_answer(item)
        answers[key] = outcome if isinstance(outcome, WorkerError) else outcome.tolist()
    return answers


def test_request_travels_to_a_worker_and_back(queue):
    enqueue(queue, "r1", [[5, 6], [7]])
    enqueue(queue, "r2", [[8]])
    enqueue(queue, "r3", [[9]], reply_to="api-2")
    assert queue.backlog() == 3
    got = queue.read("w1", count=10, block_ms=100)
    assert [r.key for r in got] == ["r1", "r2", "r3"]
    assert [list(s) for s in got[0].sequences] == [[5, 6], [7]]
    answers = [(got[0], Answer([0.25, 0.75])), (got[1], "token id outside the model's vocabulary"), (got[2], Answer([0.5]))]
    queue.respond(answers, result_ttl_s=5)
    mine = results(queue, "api-1")
    assert mine["r1"] == [0.25, 0.75] and set(mine) == {"r1", "r2"}  # both of api-1's results in one read
    assert isinstance(mine["r2"], WorkerError) and "vocabulary" in str(mine["r2"])
    assert results(queue, "api-2") == {"r3": [0.5]}  # each API process reads only its own list
    assert queue.backlog() == 0  # answered entries are acknowledged and deleted
    assert queue.redis.xpending(queue.stream, "workers")["pending"] == 0


def test_an_entry_nobody_can_answer_is_retired_not_kept_forever(queue):
    queue.redis.xadd(queue.stream, {k: v for k, v in encode_request("no-reply-to", [[5]], deadline(), "api-1").items() if k != "a"})
    enqueue(queue, "fine", [[6]])
    assert [r.key for r in queue.read("w", count=10, block_ms=100)] == ["fine"]
    assert queue.backlog() == 1 and queue.redis.xpending(queue.stream, "workers")["pending"] == 1  # only the answerable one


def test_results_expire_when_nobody_collects_them(queue):
    enqueue(queue, "gone", [[5]])
    queue.respond([(queue.read("w", 1, 100)[0], Answer([0.5]))], result_ttl_s=1)
    assert 0 < queue.redis.ttl(queue.results_key("api-1")) <= 1


def test_pop_gives_up_at_its_timeout_and_never_blocks_forever(queue):
    started = time.monotonic()
    assert queue.pop_results("nobody", 0.3) == []
    assert 0.25 < time.monotonic() - started < 1.0
    for tiny in (0, 0.0001, 0.001):  # Redis 6.2 reads BLPOP 0.001 as 0: block forever. Never sent.
        started = time.monotonic()
        assert queue.pop_results("nobody", tiny) == []
        assert time.monotonic() - started < 0.5


def test_backlog_is_bounded(queue):
    for i in range(3):
        enqueue(queue, f"r{i}", [[5]], max_backlog=3)
    with pytest.raises(QueueFull):
        enqueue(queue, "one-too-many", [[5]], max_backlog=3)
    assert queue.backlog() == 3
    taken = queue.read("w", count=1, block_ms=None)
    queue.respond([(taken[0], Answer([0.1]))], result_ttl_s=5)
    enqueue(queue, "fits-again", [[5]], max_backlog=3)


def test_entries_of_a_dead_worker_are_taken_over_once_idle(queue):
    enqueue(queue, "r1", [[5]])
    assert [r.key for r in queue.read("dead", count=10, block_ms=100)] == ["r1"]
    assert queue.claim_abandoned("alive", min_idle_ms=500, live_ttl_s=3) == []  # not idle long enough yet
    time.sleep(0.6)
    claimed = queue.claim_abandoned("alive", min_idle_ms=500, live_ttl_s=3)
    assert [r.key for r in claimed] == ["r1"]
    queue.respond([(claimed[0], Answer([0.9]))], result_ttl_s=5)
    assert results(queue)["r1"] == pytest.approx([0.9])
    assert queue.claim_abandoned("alive", min_idle_ms=0, live_ttl_s=3) == []


def test_a_live_workers_slow_batch_is_not_taken(queue):
    enqueue(queue, "r1", [[5]])
    queue.heartbeat("slow", {}, ttl_s=3)
    queue.read("slow", count=10, block_ms=100)
    time.sleep(0.3)
    assert queue.claim_abandoned("other", min_idle_ms=200, live_ttl_s=3) == []
    queue.sign_off("slow")  # ... until it stops heartbeating
    assert [r.key for r in queue.claim_abandoned("other", min_idle_ms=200, live_ttl_s=3)] == ["r1"]


def test_deleted_entries_are_dropped_from_the_pending_list_on_takeover(queue):
    enqueue(queue, "r1", [[5]])
    [request] = queue.read("dead", count=10, block_ms=100)
    queue.redis.xdel(queue.stream, request.entry_id)
    assert queue.claim_abandoned("other", min_idle_ms=0, live_ttl_s=3) == []
    assert queue.redis.xpending(queue.stream, "workers")["pending"] == 0


def test_long_gone_consumers_are_forgotten(queue):
    for i in range(3):
        enqueue(queue, f"r{i}", [[5]])
    queue.finish([r.entry_id for r in queue.read("gone", count=1, block_ms=None)])  # nothing pending, not live
    queue.read("holding", count=1, block_ms=None)  # not live, but still holds an entry: kept for takeover
    queue.heartbeat("here", {}, ttl_s=3)
    queue.finish([r.entry_id for r in queue.read("here", count=1, block_ms=None)])
    assert queue.forget_dead_consumers(live_ttl_s=3, idle_ms=0) == 1
    assert sorted(c["name"] for c in queue.redis.xinfo_consumers(queue.stream, "workers")) == [b"here", b"holding"]


def test_finish_retires_without_answering(queue):
    enqueue(queue, "late", [[5]], deadline(-1))
    request = queue.read("w", count=1, block_ms=None)[0]
    assert request.expired(time.time() * 1000)
    queue.finish([request.entry_id])
    assert queue.backlog() == 0 and queue.redis.xpending(queue.stream, "workers")["pending"] == 0


def test_malformed_entries_are_dropped_not_redelivered(queue):
    queue.redis.xadd(queue.stream, {"r": "bad", "d": "0", "l": b"\x01\x00\x00\x00", "t": b""})
    assert queue.read("w", count=10, block_ms=None) == []
    assert queue.backlog() == 0


def test_heartbeats_mark_workers_live_until_they_sign_off(queue):
    assert queue.live_workers(ttl_s=5) == 0
    queue.heartbeat("w1", {"pid": 1}, ttl_s=5)
    queue.heartbeat("w2", {"pid": 2}, ttl_s=5)
    assert queue.live_workers(ttl_s=5) == 2
    queue.sign_off("w1")
    assert queue.live_workers(ttl_s=5) == 1
    assert queue.live_workers(ttl_s=0.000001) == 0  # a stale beat does not count


def test_group_comes_back_after_a_redis_restart(redis_server, queue):
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        enqueue(queue, "r", [[5]])
    redis_server.start()
    enqueue(queue, "r", [[5]])  # the stream exists again, the group does not
    assert queue.read("w", count=10, block_ms=None) == []  # NOGROUP: recreated from id 0 ...
    assert [r.key for r in queue.read("w", count=10, block_ms=None)] == ["r"]  # ... so nothing queued is skipped


def test_state_reports_backlog_pending_oldest_waiting_age_and_live_workers(queue):
    assert queue.state(3) == {"queue_backlog": 0, "queue_pending": 0, "queue_oldest_waiting_age_seconds": 0, "live_workers": 0}
    enqueue(queue, "taken", [[5]])
    queue.read("w", count=1, block_ms=None)  # delivered: pending, no longer waiting
    time.sleep(0.2)
    enqueue(queue, "waiting", [[5]])
    queue.heartbeat("w", {}, ttl_s=3)
    time.sleep(0.3)
    state = queue.state(3)
    assert state["queue_backlog"] == 2 and state["queue_pending"] == 1 and state["live_workers"] == 1
    assert 0.25 <= state["queue_oldest_waiting_age_seconds"] < 0.45  # the waiting entry's age, not the taken one's
