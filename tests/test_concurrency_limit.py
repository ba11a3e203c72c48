"""The API's request limit, apart from its connections (service/api/concurrency.py): on a WSGI app of threads, and
in the real API under gunicorn's gevent worker."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.api.concurrency import ConcurrencyLimit
from tests.helpers import Service

PROBES = ("/healthz", "/readyz", "/metrics")


class HeldApp:
    """A WSGI app whose requests stay in service until released; counts how many are in at once."""

    def __init__(self):
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = threading.Semaphore(0)

    def __call__(self, environ, start_response):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        if environ["PATH_INFO"] == "/predict":
            assert self.release.wait(10)
        with self.lock:
            self.inside -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]


def call(app, path: str) -> list[bytes]:
    return list(app({"PATH_INFO": path}, lambda status, headers: None))


def test_requests_beyond_the_limit_wait_for_a_place_and_all_are_answered():
    held = HeldApp()
    limited = ConcurrencyLimit(held, 2)
    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(call, limited, "/predict") for _ in range(5)]
        for _ in range(2):
            assert held.entered.acquire(timeout=10)
        assert not held.entered.acquire(timeout=0.3)  # the other three wait outside
        assert held.inside == 2
        held.release.set()
        assert [a.result(timeout=10) for a in answers] == [[b"/predict"]] * 5
    assert held.most_inside == 2


@pytest.mark.parametrize("path", PROBES)
def test_probes_and_metrics_are_answered_while_every_place_is_taken(path):
    held = HeldApp()
    limited = ConcurrencyLimit(held, 1, uncounted_paths=PROBES)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(call, limited, "/predict")
        assert held.entered.acquire(timeout=10)
        assert call(limited, path) == [path.encode()]
        held.release.set()
        assert busy.result(timeout=10) == [b"/predict"]


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(HeldApp(), 0)


@pytest.mark.slow
def test_under_gevent_a_request_waiting_for_a_place_lets_the_one_in_service_finish(redis_server, tiny_model_store):
    """One place, eight callers at once, under gunicorn's gevent worker (the default): the wait for a place must
    yield to the greenlet in service, which waits on Redis for its result. A wait that held the process' OS thread
    would deadlock it until gunicorn's timeout killed it."""
    service = Service(redis_server.url, tiny_model_store, settings={"SENTIMENT_API_CONCURRENCY": "1"})
    with service.running(), ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: service.predict({"text": f"great film number {i}"}, timeout=20), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        assert service.api.poll() is None
