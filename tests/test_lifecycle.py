"""The model lifecycle end to end, under a background load of default requests that must never see an error.

Two API processes and two workers on one Redis, a model config file edited as
an operator would: load version 2 beside 1, a 20 % canary, a 50 % shadow,
promotion, rollback, unloading, a broken file. Version 2 is version 1 with its
output negated, so every answer says which version gave it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import Service, wait_until

pytestmark = pytest.mark.slow  # two API processes, two workers, config changes under load: end to end

IN_FORCE_S = 2.0  # the contract: a change is in force everywhere within 2 s


class DefaultLoad:
    """Clients sending default requests (no version, no label) until stopped; every answer's status and version."""

    def __init__(self, service: Service, clients: int = 4):
        self.service = service
        self.stop = threading.Event()
        self.sent = 0
        self.answers: list[tuple[float, int, int | None]] = []  # (time, status, version)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.sent += 1
            try:
                response = self.service.predict({"text": "great superb film"}, timeout=15)
                status, version = response.status_code, response.json().get("model", {}).get("version")
            except requests.RequestException:
                status, version = -1, None
            with self.lock:
                self.answers.append((time.monotonic(), status, version))
            time.sleep(0.01)

    def __enter__(self) -> DefaultLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def default_versions(service: Service, n: int) -> list[int]:
    """The versions that answered ``n`` default requests, each with a request id of its own, four at a time."""

    def version_of_one(_: int) -> int:
        response = service.predict({"text": "great superb film"}, headers={"X-Request-ID": uuid.uuid4().hex})
        assert response.status_code == 200, response.text
        return response.json()["model"]["version"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(version_of_one, range(n)))


def states(service: Service) -> dict[int, str]:
    body = requests.get(f"{service.url}/v1/models/sentiment", timeout=5).json()
    return {int(s["version"]): s["state"] for s in body["model_version_status"]}


def metric_sum(service: Service, pattern: str) -> float:
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(pattern, line))


@pytest.fixture
def lifecycle(redis_server, tiny_two_versions, tmp_path):
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  sentiment:\n    versions: [1]\n")
    settings = {
        "SENTIMENT_MODEL_CONFIG": str(config),
        "SENTIMENT_UNLOAD_GRACE_S": "1",
        "SENTIMENT_LOG_LEVEL": "INFO",
        "SENTIMENT_MAX_BATCH_SIZE": "16",  # batches of 16 at most: a version's warm-up compiles 6 buckets of 12
    }
    svc = Service(redis_server.url, tiny_two_versions, settings=settings, api_processes=2, log_dir=tmp_path)
    svc.start_api()
    svc.start_worker(wait_ready=False)
    svc.start_worker(wait_ready=False)
    svc.wait_workers(2)
    try:
        yield svc, config
    finally:
        svc.stop()


def edit(config, text: str) -> float:
    config.write_text(text)
    return time.monotonic()


def test_load_canary_shadow_promote_rollback_unload_under_load_without_an_error(lifecycle, tmp_path):
    svc, config = lifecycle
    assert default_versions(svc, 5) == [1] * 5

    with DefaultLoad(svc) as load:
        # Version 2 loads beside 1: LOADING, then AVAILABLE once a worker has warmed it; default traffic stays on 1.
        edit(config, "models:\n  sentiment:\n    versions: [1, 2]\n    labels: {stable: 1, canary: 2}\n    default: stable\n")
        seen: set = set()
        wait_until(lambda: seen.add(states(svc).get(2)) or "AVAILABLE" in seen, 120, interval_s=0.1, what="version 2 AVAILABLE")
        assert "LOADING" in seen  # listed at once, routable only once a worker had loaded and warmed it
        named = svc.predict({"text": "great superb film", "version": 2})
        assert named.status_code == 200 and named.json()["model"] == {"name": "sentiment", "version": 2}
        assert named.headers["X-Model-Version"] == "2"
        assert named.json()["predictions"][0]["label"] != svc.predict({"text": "great superb film"}).json()["predictions"][0]["label"]
        assert svc.predict({"text": "fine", "label": "canary"}).json()["model"]["version"] == 2

        # A 20 % canary, in force within 2 s everywhere: the share served is 20 % +- 5 points over 1,000 requests.
        edit(config, config.read_text() + "    canary: {label: canary, percent: 20}\n")
        time.sleep(IN_FORCE_S)
        share = default_versions(svc, 1000).count(2) / 1000
        assert 0.15 <= share <= 0.25, share

        # A 50 % shadow instead: answers come from 1 only, and the disagreement of 2 shows in the metrics.
        disagreed = metric_sum(svc, r'sentiment_shadow_texts_total\{.*agreement="disagree"')
        edit(config, config.read_text().replace("canary: {label: canary, percent: 20}", "shadow: {label: canary, percent: 50}"))
        time.sleep(IN_FORCE_S)
        assert set(default_versions(svc, 100)) == {1}
        wait_until(lambda: metric_sum(svc, r'sentiment_shadow_texts_total\{.*agreement="disagree"') > disagreed + 20, 10,
                   what="shadow comparisons")  # fmt: skip
        assert metric_sum(svc, r'sentiment_shadow_texts_total\{.*agreement="agree"') == 0  # v2 says the opposite

        # Promotion: `stable` moves to 2. Rollback: it moves back.
        edit(config, "models:\n  sentiment:\n    versions: [1, 2]\n    labels: {stable: 2, previous: 1}\n    default: stable\n")
        time.sleep(IN_FORCE_S)
        assert set(default_versions(svc, 40)) == {2}
        edit(config, "models:\n  sentiment:\n    versions: [1, 2]\n    labels: {stable: 1, canary: 2}\n    default: stable\n")
        time.sleep(IN_FORCE_S)
        assert set(default_versions(svc, 40)) == {1}

        # A broken file changes nothing (and says why in the log).
        edit(config, "models:\n  sentiment:\n    versions: [1, 2]\n    default: nonsense\n")
        time.sleep(IN_FORCE_S)
        assert set(default_versions(svc, 20)) == {1} and states(svc) == {1: "AVAILABLE", 2: "AVAILABLE"}

        # Unloading 2: no longer routable at once, its memory freed once drained; default traffic never notices.
        edit(config, "models:\n  sentiment:\n    versions: [1]\n")
        time.sleep(IN_FORCE_S)
        assert svc.predict({"text": "fine", "version": 2}).status_code == 404
        wait_until(lambda: 2 not in states(svc), 30, interval_s=0.2, what="version 2 unloaded")
        time.sleep(1.0)
    statuses = [status for _, status, _ in load.answers]
    assert len(statuses) == load.sent and len(statuses) > 200  # every request answered
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "refused, the last good one stays in force" in logs and "no label 'nonsense'" in logs
    assert logs.count("unloaded sentiment v2") == 2  # both workers let it go
