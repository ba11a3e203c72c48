"""The worker's batch runner (`service.worker.runner.BatchRunner`) with a fake model and a fake queue: no Redis, no TensorFlow."""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from service.codec import Answer, QueuedRequest
from service.config import Settings
from service.model_store import ModelVersion
from service.worker.runner import BatchRunner


class FakeModel:
    """A `ScoringModel`: a sequence's probability is its first id / 100; its tokens weigh their id / 1000; calls are logged."""

    version = ModelVersion("sentiment", 1, Path("/nonexistent"), {})
    vocab_size = 100

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    def predict(self, sequences):
        self.calls.append(("predict", len(sequences)))
        if self.fail:
            raise RuntimeError("out of memory")
        return [s[0] / 100 for s in sequences]

    def explain(self, sequences):
        self.calls.append(("explain", len(sequences)))
        return [s[0] / 100 for s in sequences], [float(s[0]) for s in sequences], [[t / 1000 for t in s] for s in sequences]

    def padded_batch_size(self, texts: int) -> int:
        return 8 if texts <= 8 else texts


class FakeQueue:
    def __init__(self):
        self.responded: list[tuple[QueuedRequest, Answer | str]] = []
        self.finished: list[str] = []

    def respond(self, answers, result_ttl_s: int) -> None:
        self.responded.extend(answers)

    def finish(self, entry_ids) -> None:
        self.finished.extend(entry_ids)


def request(key: str, *sequences: list[int], explain: bool = False, deadline_in_s: float = 5.0) -> QueuedRequest:
    now_ms = int(time.time() * 1000)
    return QueuedRequest(
        f"{now_ms}-0", key, int(now_ms + deadline_in_s * 1000), [array("I", s) for s in sequences], "api-1", f"id-{key}", explain
    )


def runner(model: FakeModel) -> tuple[BatchRunner, FakeQueue]:
    queue = FakeQueue()
    return BatchRunner(Settings(redis_url="redis://unused", max_batch_size=16), model, queue), queue


def answers_by_key(queue: FakeQueue) -> dict[str, Answer | str]:
    return {r.key: answer for r, answer in queue.responded}


def test_every_request_gets_its_own_sequences_answers_in_order():
    model = FakeModel()
    batch_runner, queue = runner(model)
    batch_runner.perform([request("a", [10, 1], [20]), request("b", [30, 2, 2]), request("c", [40])])
    answers = answers_by_key(queue)
    assert answers["a"].probabilities == [0.1, 0.2] and answers["b"].probabilities == [0.3] and answers["c"].probabilities == [0.4]
    assert not answers["a"].explained
    assert batch_runner.batches == 1 and batch_runner.texts == 4
    assert model.calls == [("predict", 4)]  # 4 texts pad to a bucket of 8 anyway: one call


def test_explanations_run_in_calls_of_their_own():
    model = FakeModel()
    batch_runner, queue = runner(model)
    batch_runner.perform([request("plain", [10]), request("why", [50, 7], [60], explain=True)])
    answers = answers_by_key(queue)
    assert answers["plain"].probabilities == [0.1] and not answers["plain"].explained
    why = answers["why"]
    assert why.probabilities == [0.5, 0.6] and why.logits == [50.0, 60.0]
    assert [list(row) for row in why.contributions] == [[0.05, 0.007], [0.06]]
    assert model.calls == [("predict", 1), ("explain", 2)]


def test_expired_requests_are_retired_unrun_and_an_unknown_token_gets_an_error():
    model = FakeModel()
    batch_runner, queue = runner(model)
    late = request("late", [10], deadline_in_s=-1)
    batch_runner.perform([late, request("odd", [100]), request("ok", [10])])
    assert queue.finished == [late.entry_id]  # never answered: the API has answered 504 already
    answers = answers_by_key(queue)
    assert set(answers) == {"odd", "ok"} and answers["odd"] == "token id outside the model's vocabulary"
    assert model.calls == [("predict", 1)]


def test_a_failing_model_answers_every_request_with_an_error_and_the_runner_goes_on():
    failing = FakeModel(fail=True)
    batch_runner, queue = runner(failing)
    batch_runner.perform([request("a", [10]), request("b", [20])])
    assert answers_by_key(queue) == {"a": "inference failed", "b": "inference failed"}
    failing.fail = False
    batch_runner.perform([request("c", [30])])
    assert answers_by_key(queue)["c"].probabilities == [0.3]


def test_long_and_short_texts_are_split_when_it_saves_work():
    model = FakeModel()
    batch_runner, queue = runner(model)
    batch_runner.step_overhead_texts = 0.0  # no cost per step: padding short texts to a long one is pure waste
    batch_runner.perform([request("long", [10] * 300), *(request(f"s{i}", [20]) for i in range(9))])
    assert len(model.calls) == 2 and sum(n for _, n in model.calls) == 10  # not one call of 10 texts x 300 steps
    assert len(queue.responded) == 10
