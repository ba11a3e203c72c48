"""The per-key token bucket, against a real Redis: burst, refusal with when to retry, refill, one bucket for all."""

from __future__ import annotations

import os
import time

import pytest
import redis

from service.queue import QueueFull, RequestQueue, connect
from service.rate_limit import Charge, Decision, RateLimiter, RateLimitExceeded


@pytest.fixture
def limiter(redis_server) -> RateLimiter:
    return RateLimiter(connect(redis_server.url, 1.0), "t")


def test_a_burst_then_refusals_that_say_when_to_retry(limiter):
    decisions = [limiter.take(Charge("shop", 0.5, 3)) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.retry_after_s == 2  # one token at 0.5/s
    assert refused.headers()["Retry-After"] == "2"
    assert refused.headers()["RateLimit-Policy"] == '"key";q=3;w=6'
    assert refused.headers()["RateLimit"] == '"key";r=0;t=6'
    assert "Retry-After" not in decisions[0].headers()


def test_the_bucket_refills_at_its_rate(limiter):
    assert all(limiter.take(Charge("fast", 20.0, 2)).allowed for _ in range(2))
    assert not limiter.take(Charge("fast", 20.0, 2)).allowed
    time.sleep(0.15)  # 3 tokens' worth at 20/s, capped at the burst of 2
    assert [limiter.take(Charge("fast", 20.0, 2)).allowed for _ in range(3)] == [True, True, False]


def test_keys_have_their_own_buckets_and_connections_share_one(redis_server, limiter):
    other = RateLimiter(connect(redis_server.url, 1.0), "t")  # another API process
    assert limiter.take(Charge("a", 0.1, 2)).allowed and other.take(Charge("a", 0.1, 2)).allowed
    assert not limiter.take(Charge("a", 0.1, 2)).allowed and not other.take(Charge("a", 0.1, 2)).allowed
    assert limiter.take(Charge("b", 0.1, 2)).allowed  # another key, untouched
    assert RateLimiter(connect(redis_server.url, 1.0), "other-prefix").take(Charge("a", 0.1, 1)).allowed  # another deployment


def test_an_idle_bucket_expires(redis_server, limiter):
    limiter.take(Charge("idle", 100.0, 1))
    ttl = connect(redis_server.url, 1.0).pttl("t:ratelimit:idle")
    assert 0 < ttl <= 1100  # full again after 10 ms, kept a second past it


def test_a_dead_redis_raises_for_the_api_to_answer_503(redis_server, limiter):
    redis_server.stop()
    with pytest.raises(redis.RedisError):
        limiter.take(Charge("shop", 1.0, 1))


def test_headers_of_an_allowed_request():
    decision = Decision(allowed=True, remaining=4, retry_after_s=1, reset_s=1, rate_per_s=10.0, burst=5)
    assert decision.headers() == {"RateLimit-Policy": '"key";q=5;w=1', "RateLimit": '"key";r=4;t=1'}


def test_the_enqueue_charges_the_key_in_its_round_trip(redis_server):
    queue = RequestQueue(connect(redis_server.url, 1.0), "t", "sentiment", 1)
    charge = Charge("shop", 0.5, 2)

    def enqueue(bound: int = 10):
        return queue.enqueue_charged(charge, os.urandom(8).hex(), [[1, 2, 3]], 0, bound, "api-1", "rid")

    assert [enqueue().remaining for _ in range(2)] == [1, 0]
    with pytest.raises(RateLimitExceeded) as refused:
        enqueue()
    assert refused.value.decision.retry_after_s == 2 and queue.backlog() == 2  # refused: nothing queued
    other = RateLimiter(connect(redis_server.url, 1.0), "t")
    assert not other.take(charge).allowed  # one bucket, whichever way it is charged
    free = Charge("free", 100.0, 1)
    with pytest.raises(QueueFull):
        queue.enqueue_charged(free, "k", [[1]], 0, 2, "api-1")  # a full queue refuses first and charges nothing
    assert other.take(free).allowed
