"""The API process's result listener, against a real Redis: one thread, many waiting requests."""

from __future__ import annotations

import threading
import time

import pytest

from service.codec import Answer, WorkerError, encode_answer
from service.queue import RequestQueue, connect
from service.results import RedisUnavailable, ResultListener


@pytest.fixture
def listener(redis_server):
    queue = RequestQueue(connect(redis_server.url, 0.5), "test", "sentiment", 1)
    listening = ResultListener(queue, connect(redis_server.url, 0.5, blocking_s=0.2), block_s=0.2).start()
    yield listening
    listening.stop()


def encode_result(key: str, answer: list[float] | str) -> bytes:
    return encode_answer(key, answer if isinstance(answer, str) else Answer(answer))


def push(listener: ResultListener, *items: bytes) -> None:
    listener.queue.redis.rpush(listener.queue.results_key(listener.reply_to), *items)


def test_each_waiting_request_gets_its_own_result(listener):
    waiters = {f"k{i}": listener.expect(f"k{i}") for i in range(50)}
    push(listener, *(encode_result(key, [i / 100]) for i, key in reversed(list(enumerate(waiters)))))
    for i, (key, waiter) in enumerate(waiters.items()):
        assert waiter.wait(2.0) == pytest.approx([i / 100]), key


def test_a_worker_error_reaches_its_request(listener):
    waiter = listener.expect("bad")
    push(listener, encode_result("bad", "token id outside the model's vocabulary"))
    with pytest.raises(WorkerError, match="vocabulary"):
        waiter.wait(2.0)


def test_a_late_or_duplicate_result_is_dropped(listener):
    push(listener, encode_result("nobody-waits", [0.5]), b"malformed, no separator")
    waiter = listener.expect("next")
    push(listener, encode_result("next", [0.25]))
    assert list(waiter.wait(2.0)) == [0.25]  # the listener carried on past both


@pytest.mark.parametrize("deadline_ms", [1, 2, 5, 50])
def test_a_wait_ends_at_its_deadline_to_the_millisecond(listener, deadline_ms):
    waiter = listener.expect("never")
    started = time.perf_counter()
    assert waiter.wait(deadline_ms / 1000) is None
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert deadline_ms - 0.5 <= elapsed_ms < deadline_ms + 250  # not early; late only by scheduling on a busy machine
    assert waiter.wait(0) is None and waiter.wait(-1) is None


def test_redis_going_away_fails_the_waiting_requests_at_once_then_recovers(listener, redis_server):
    waiters = [listener.expect(f"w{i}") for i in range(5)]
    outcomes: list[BaseException | None] = []

    def wait(waiter) -> None:
        try:
            waiter.wait(10)
            outcomes.append(None)
        except RedisUnavailable as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=wait, args=(w,)) for w in waiters]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    redis_server.kill()
    for thread in threads:
        thread.join(5)
    assert len(outcomes) == 5 and all(isinstance(o, RedisUnavailable) for o in outcomes)
    assert time.monotonic() - started < 1.0
    redis_server.start()
    waiter = listener.expect("after")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            push(listener, encode_result("after", [0.75]))
            break
        except Exception:
            time.sleep(0.1)
    assert list(waiter.wait(5)) == [0.75]
