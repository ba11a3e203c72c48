"""The inference worker's heartbeat, against a real Redis and the tiny real model."""

from __future__ import annotations

import threading
import time

import pytest

from service.config import Settings
from service.model_store import resolve
from service.queue import RequestQueue, connect
from service.worker.loop import InferenceWorker
from service.worker.runner import BatchRunner
from service.worker.versions import Slot
from tests.helpers import wait_until


@pytest.fixture
def worker(redis_server, tiny_model_store):
    from service.worker.model import SentimentModel

    settings = Settings(redis_url=redis_server.url, model_store=tiny_model_store, heartbeat_interval_s=0.1, heartbeat_ttl_s=0.3)
    version = resolve(settings.model_dir)
    queue = RequestQueue(connect(redis_server.url, 0.5), settings.redis_key_prefix, version.name, version.version)
    worker = InferenceWorker(settings, "test-worker")
    worker.add(Slot.of(BatchRunner(settings, SentimentModel(version), queue), settings))
    return worker


def queue_of(worker: InferenceWorker):
    [slot] = worker.slots.values()
    return slot.queue


def test_heartbeat_runs_beside_a_long_batch_but_stops_when_the_loop_is_stuck(worker):
    beating = threading.Thread(target=worker.beat_until_stopped, daemon=True)
    beating.start()
    try:
        # The loop turned a moment ago (a long batch may be running): the worker stays live.
        worker.progress_at = time.monotonic()
        wait_until(lambda: queue_of(worker).live_workers(0.3) == 1, 2, what="a heartbeat")
        time.sleep(0.6)  # longer than the TTL, without the loop turning
        assert queue_of(worker).live_workers(0.3) == 1
        # A loop that has not turned for 10 x TTL is stuck: the beat stops, readiness and takeover follow.
        worker.progress_at = time.monotonic() - 100
        wait_until(lambda: queue_of(worker).live_workers(0.3) == 0, 2, what="the heartbeat to stop")
    finally:
        worker.heartbeat_stop.set()
        beating.join(2)
    assert not beating.is_alive()
