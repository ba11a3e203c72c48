"""The scoring core (`service.scoring.Scorer`) alone: a fake queue and worker, no Redis, no gunicorn, no TensorFlow.

The fake worker answers through the real wire format (`service.codec`) and the
real `Waiter`, so these tests cover everything the API does with a request
except moving bytes through Redis, which the end-to-end tests do.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import pytest
import redis

from service.codec import Answer, decode_answer, encode_answer, encode_request
from service.config import Settings
from service.errors import BadRequest, DeadlineExceeded, Overloaded, PayloadTooLarge, Unavailable
from service.model_store import ModelVersion
from service.queue import QueueFull
from service.results import RedisUnavailable, Waiter
from service.scoring import Deadline, Scorer
from service.tokenizer import LongTextPolicy, Tokenizer

WORDS = ["great", "good", "fine", "bad", "awful", "the", "film", "was"]
VALENCE = {"great": 2.0, "good": 1.0, "fine": 0.2, "bad": -1.0, "awful": -2.0}  # a token's contribution to the logit


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class FakeListener:
    """The result listener's surface: waiters by key, a reply-to name."""

    reply_to = "api-test"

    def __init__(self) -> None:
        self.waiting: dict[str, Waiter] = {}

    def expect(self, key: str) -> Waiter:
        self.waiting[key] = Waiter()
        return self.waiting[key]

    def forget(self, key: str) -> None:
        self.waiting.pop(key, None)


class FakeQueue:
    """Enqueue = a worker answering at once (or after ``delay_s``, or never), through the real encodings."""

    def __init__(self, listener: FakeListener, vocabulary: list[str]):
        self.listener = listener
        self.vocabulary = vocabulary
        self.workers = 1
        self.fail: Exception | None = None  # raised by enqueue
        self.answer_with: str | Exception | None = None  # an error message, or RedisUnavailable, instead of scores
        self.delay_s = 0.0
        self.silent = False
        self.enqueued: list[dict] = []

    def live_workers(self, ttl_s: float) -> int:
        return self.workers

    def enqueue(self, key, sequences, deadline_ms, max_backlog, reply_to, request_id="", explain=False) -> str:
        if self.fail is not None:
            raise self.fail
        self.enqueued.append(encode_request(key, sequences, deadline_ms, reply_to, request_id, explain))
        if not self.silent:
            answer = self.worker(sequences, explain)
            threading.Timer(self.delay_s, self.deliver, (key, answer)).start()
        return "1-0"

    def worker(self, sequences, explain: bool) -> Answer | str | Exception:
        """Each token adds its valence to the logit: what gradient × input gives for a bag of words."""
        if self.answer_with is not None:
            return self.answer_with
        contributions = [[VALENCE.get(self.vocabulary[t], 0.0) for t in s] for s in sequences]
        logits = [sum(row) for row in contributions]
        probabilities = [sigmoid(logit) for logit in logits]
        return Answer(probabilities, logits, contributions) if explain else Answer(probabilities)

    def deliver(self, key: str, answer) -> None:
        waiter = self.listener.waiting.pop(key, None)
        if waiter is None:
            return
        if isinstance(answer, Exception):
            waiter.deliver(answer)
        else:
            _, outcome = decode_answer(encode_answer(key, answer))  # the bytes a real worker would send
            waiter.deliver(outcome)


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url="redis://unused", max_texts_per_request=4, max_text_chars=200, max_windows_per_request=6, retry_after_s=2)


@pytest.fixture
def version() -> ModelVersion:
    metadata = {"label_names": ["negative", "positive"], "decision_threshold": 0.5, "serving": {"explain_signature": "explain"}}
    return ModelVersion("sentiment", 7, Path("/nonexistent"), metadata)


@pytest.fixture
def scorer(settings, version) -> Scorer:
    vocabulary = ["<pad>", "<oov>", *WORDS]
    tokenizer = Tokenizer(vocabulary, max_length=4, long_texts=LongTextPolicy("windows", window=4, max_windows=3, aggregate="mean_logit"))
    listener = FakeListener()
    return Scorer(settings, version, FakeQueue(listener, vocabulary), listener, tokenizer)


def predict(scorer: Scorer, texts: list[str], explain: bool = False, budget_s: float = 2.0):
    return scorer.predict(texts, request_id="client-1", deadline=Deadline.after(budget_s), explain=explain)


# --- answers -------------------------------------------------------------------------------------


def test_predictions_in_order_with_the_versions_labels_and_the_requests_figures(scorer):
    scored = predict(scorer, ["great film", "awful film", "the film was"])
    assert [p.label for p in scored.predictions] == ["positive", "negative", "positive"]  # sigmoid(0) = 0.5: the threshold
    assert scored.predictions[0].score == pytest.approx(sigmoid(2.0), abs=1e-6)
    assert scored.model.version == 7
    assert scored.stats["texts"] == 3 and scored.stats["tokens"] == 7 and scored.stats["windows"] == 3 and scored.stats["truncated"] == 0
    assert scored.stats["queue_wait_ms"] >= 0
    [entry] = scorer.queue.enqueued
    assert entry["i"] == "client-1" and entry["a"] == "api-test" and entry["r"] != "client-1"  # the key is never the client's id


def test_a_long_text_is_read_in_windows_whose_logits_are_averaged(scorer):
    scored = predict(scorer, ["great great good fine bad awful the film was"])  # 9 tokens: windows of 3, 3 and 3
    [p] = scored.predictions
    assert p.windows == 3 and not p.truncated and p.tokens == 9
    window_logits = [2 + 2 + 1, 0.2 - 1 - 2, 0.0]
    assert p.score == pytest.approx(sigmoid(sum(window_logits) / 3), abs=1e-6)


def test_a_text_past_the_window_bound_loses_its_middle(scorer):
    scored = predict(scorer, ["great " * 7 + "awful " * 7], explain=True)  # 14 tokens, at most 3 windows of 4 read
    [p] = scored.predictions
    assert p.truncated and p.windows == 3 and scored.stats["truncated"] == 1
    tokens = p.explanation["tokens"]
    assert len(tokens) == 14 and sum(t["read"] for t in tokens) == 12
    assert all(t["weight"] is None for t in tokens if not t["read"])


def test_explanations_weigh_every_token_by_its_share_of_the_texts_logit(scorer):
    text = "The film was GREAT, not bad"
    [p] = predict(scorer, [text], explain=True).predictions
    explanation = p.explanation
    assert explanation["method"] == "gradient_x_input" and explanation["logit"] == pytest.approx((0 + 2.0 - 1.0) / 2)
    spans = [(t["token"], text[t["start"] : t["end"]]) for t in explanation["tokens"]]
    assert spans == [("the", "The"), ("film", "film"), ("was", "was"), ("great", "GREAT"), ("not", "not"), ("bad", "bad")]
    # Read in 2 windows (6 tokens): each weight counts half, as the text's logit is their mean.
    assert [t["weight"] for t in explanation["tokens"]] == pytest.approx([0, 0, 0, 1.0, 0, -0.5])
    assert scorer.queue.enqueued[0]["x"] == 1


def test_explain_with_a_version_that_cannot_is_a_400(scorer, version):
    scorer.model = ModelVersion(version.name, 1, version.path, {"label_names": ["negative", "positive"]})
    with pytest.raises(BadRequest, match="cannot explain"):
        predict(scorer, ["great"], explain=True)
    assert scorer.queue.enqueued == []


# --- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "error", "fragment"),
    [
        ([], BadRequest, "at least one text"),
        (["a"] * 5, PayloadTooLarge, "5 texts in one request; the limit is 4"),
        (["x" * 201], PayloadTooLarge, "texts[0] has 201 characters"),
        (["fine", "nul\x00"], BadRequest, "texts[1] contains a NUL"),
        (["  \n"], BadRequest, "texts[0] is empty"),
        ([3], BadRequest, "texts[0] must be a string"),
    ],
)
def test_texts_are_checked_before_anything_is_queued(scorer, texts, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        scorer.check_texts(texts)
    assert scorer.queue.enqueued == []


def test_too_many_windows_is_a_413_that_still_reports_the_request(scorer):
    with pytest.raises(PayloadTooLarge, match="7 windows") as refused:
        predict(scorer, ["great " * 12, "awful " * 12, "good"])  # 3 + 3 + 1 windows of at most 4 tokens; the limit is 6
    assert refused.value.stats == {"texts": 3, "tokens": 25, "truncated": 0, "windows": 7}
    assert scorer.queue.enqueued == []


# --- failures ------------------------------------------------------------------------------------


def test_no_live_worker_is_a_503_with_retry_after(scorer):
    scorer.queue.workers = 0
    with pytest.raises(Unavailable, match="no inference worker") as refused:
        predict(scorer, ["great"])
    assert refused.value.headers == {"Retry-After": "2"} and refused.value.stats["texts"] == 1


def test_a_full_queue_is_a_503_overloaded(scorer):
    scorer.queue.fail = QueueFull("stream")
    with pytest.raises(Overloaded) as refused:
        predict(scorer, ["great"])
    assert refused.value.headers == {"Retry-After": "2"}


def test_redis_failing_on_enqueue_or_while_waiting_is_a_503(scorer):
    scorer.queue.fail = redis.ConnectionError("gone")
    with pytest.raises(Unavailable, match="Redis"):
        predict(scorer, ["great"])
    scorer.queue.fail = None
    scorer.queue.answer_with = RedisUnavailable("ConnectionError")  # what the listener delivers when Redis goes away
    with pytest.raises(Unavailable, match="Redis"):
        predict(scorer, ["great"])


def test_the_vocabulary_guard_of_the_worker_is_a_503_with_its_message(scorer):
    scorer.queue.answer_with = "token id outside the model's vocabulary"
    with pytest.raises(Unavailable, match="could not score this request: token id outside the model's vocabulary"):
        predict(scorer, ["great"])


def test_a_deadline_already_passed_queues_nothing(scorer):
    with pytest.raises(DeadlineExceeded, match="the deadline of 0 ms passed before the request was queued") as refused:
        predict(scorer, ["great"], budget_s=0.0)
    assert scorer.queue.enqueued == [] and refused.value.stats["texts"] == 1
    assert scorer.listener.waiting == {}  # nothing left waiting


def test_no_answer_within_the_deadline_is_a_504_and_a_late_answer_is_dropped(scorer):
    scorer.queue.delay_s = 0.3
    with pytest.raises(DeadlineExceeded, match="no result within the deadline of 50 ms"):
        predict(scorer, ["great"], budget_s=0.05)
    assert scorer.listener.waiting == {}  # forgotten: the late answer will find nobody
    entry = scorer.queue.enqueued[0]
    assert entry["d"] > 0  # the worker learns the deadline, and drops the request unrun once it has passed
