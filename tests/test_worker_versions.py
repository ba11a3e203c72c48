"""A worker serving several versions: which it holds, fairness between their streams, loading and unloading.

Real Redis, the real loop and runner; fake models that answer at once (no TensorFlow).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from service.codec import decode_answer
from service.config import Settings
from service.model_config import parse_config
from service.model_store import ModelVersion
from service.queue import RequestQueue, connect
from service.worker.loop import InferenceWorker
from service.worker.versions import VersionLoader, wanted_versions
from tests.helpers import wait_until


class FakeModel:
    """Answers every sequence with ``version / 10``; remembers its calls (in order, across models)."""

    calls: ClassVar[list[int]] = []

    def __init__(self, version: ModelVersion):
        self.version = version
        self.vocab_size = 100

    def predict(self, sequences):
        FakeModel.calls.append(self.version.version)
        return [self.version.version / 10] * len(sequences)

    def explain(self, sequences):
        raise AssertionError("not asked")

    def padded_batch_size(self, texts: int) -> int:
        return texts


@pytest.fixture
def store(tmp_path) -> Path:
    for version in (1, 2, 3):
        folder = tmp_path / "store" / "sentiment" / str(version)
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"")
        (folder / "metadata.json").write_text("{}")
    return tmp_path / "store"


@pytest.fixture
def setup(redis_server, store):
    settings = Settings(
        redis_url=redis_server.url, model_store=store, heartbeat_interval_s=0.1, heartbeat_ttl_s=0.5, unload_grace_s=0.3,
        max_batch_size=4, max_batch_wait_ms=0,
    )  # fmt: skip
    connection = connect(redis_server.url, 0.5, blocking_s=1)
    loads: list[int] = []

    def load(version: ModelVersion):
        loads.append(version.version)
        time.sleep(0.2)  # a load takes a while: the loop serves on meanwhile
        return FakeModel(version), 1.0  # a step costs a text's worth: one call per batch

    loader = VersionLoader(settings, load, lambda name, version: RequestQueue(connection, "sentiment", name, version))
    worker = InferenceWorker(settings, "w1", loader=loader)
    FakeModel.calls = []
    return settings, connection, loader, worker, loads


def run_in_thread(worker: InferenceWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def queue(connection, version: int) -> RequestQueue:
    q = RequestQueue(connection, "sentiment", "sentiment", version)
    q.ensure_group()
    return q


def answers(connection, reply_to: str = "api-1") -> dict[str, list[float]]:
    items = connection.lrange(f"sentiment:results:{reply_to}", 0, -1)
    return {key: list(values) for key, values in map(decode_answer, items)}


def test_the_versions_a_worker_holds_most_needed_first_and_bounded(store):
    config = parse_config(
        "models: {sentiment: {versions: [1, 2, 3], labels: {stable: 3, old: 1}, default: stable, canary: {label: old, percent: 5}}}",
        store,
        "sentiment",
    )
    assert wanted_versions(config, Settings(model_store=store)) == [("sentiment", 3), ("sentiment", 1), ("sentiment", 2)]
    assert wanted_versions(config, Settings(model_store=store, max_loaded_versions=2)) == [("sentiment", 3), ("sentiment", 1)]
    assert wanted_versions(config, Settings(model_store=store, worker_models="sentiment:2")) == [("sentiment", 2)]
    assert wanted_versions(config, Settings(model_store=store, worker_models="tweets")) == []


def test_one_versions_backlog_does_not_starve_another(setup):
    _, connection, loader, worker, _ = setup
    loader.wanted = [("sentiment", 1), ("sentiment", 2)]
    for key in loader.wanted:
        worker.add(loader.slot(key))
    busy, quiet = queue(connection, 1), queue(connection, 2)
    deadline = int((time.time() + 30) * 1000)
    for i in range(40):
        busy.enqueue(f"busy-{i}", [[5]], deadline, 100, "api-1")
    quiet.enqueue("quiet", [[5]], deadline, 100, "api-1")
    thread = run_in_thread(worker)
    try:
        wait_until(lambda: len(answers(connection)) == 41, 10, what="every answer")
    finally:
        worker.stop_requested = True
        thread.join(5)
    assert FakeModel.calls.index(2) <= 1  # the quiet version's one request went in the first two batches, not the eleventh
    assert FakeModel.calls.count(1) == 10  # batches of 4
    assert answers(connection)["quiet"] == pytest.approx([0.2]) and answers(connection)["busy-0"] == pytest.approx([0.1])


def test_a_version_added_loads_beside_the_loop_and_a_version_removed_is_drained_then_freed(setup, store):
    _, connection, loader, worker, loads = setup
    loader.wanted = [("sentiment", 3)]
    worker.add(loader.slot(("sentiment", 3)))
    thread = run_in_thread(worker)
    try:
        v2, v3 = queue(connection, 2), queue(connection, 3)
        wait_until(lambda: v3.live_workers(0.5) == 1, 5, what="v3 heartbeating")
        assert v2.live_workers(0.5) == 0

        loader.update(parse_config("models: {sentiment: {versions: [2, 3]}}", store, "sentiment"))
        v3.enqueue("during-the-load", [[5]], int((time.time() + 10) * 1000), 100, "api-1")
        wait_until(lambda: "during-the-load" in answers(connection), 5, what="v3 answering while v2 loads")
        wait_until(lambda: v2.live_workers(0.5) == 1, 5, what="v2 loaded and heartbeating")
        assert loads == [3, 2]

        # v2 leaves the config with a request queued for it: answered first, then v2 is let go.
        v2.enqueue("queued-for-v2", [[5]], int((time.time() + 10) * 1000), 100, "api-1")
        loader.update(parse_config("models: {sentiment: {versions: [3]}}", store, "sentiment"))
        wait_until(lambda: "queued-for-v2" in answers(connection), 5, what="v2's queued request answered")
        assert answers(connection)["queued-for-v2"] == pytest.approx([0.2])
        wait_until(lambda: ("sentiment", 2) not in worker.slots, 5, what="v2 unloaded")
        assert v2.redis.zscore(v2.workers_key, "w1") is None  # signed off at once
        assert v3.live_workers(0.5) == 1

        # Wanted again: loaded again.
        loader.update(parse_config("models: {sentiment: {versions: [2, 3]}}", store, "sentiment"))
        wait_until(lambda: ("sentiment", 2) in worker.slots, 5, what="v2 loaded again")
        assert loads == [3, 2, 2]
    finally:
        worker.stop_requested = True
        thread.join(5)
