"""The client library and its command line, against the real service (gunicorn API, a worker, Redis).

The retry tests give the client a sleep that records each wait instead of (or
before) sleeping, so they check the waits the policy chose, not wall time. The
service never answers 429 or drops kept-alive connections on its own; a small
real HTTP proxy in front of it does, as a rate-limiting proxy would.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import redis
import requests

from sentiment_client import (
    BadRequestError,
    DeadlineExceededError,
    ModelRef,
    OverloadedError,
    PayloadTooLargeError,
    Prediction,
    SentimentClient,
    TransportError,
    UnavailableError,
)
from sentiment_client.retry import parse_retry_after
from service.config import ROOT
from service.embedded_redis import EmbeddedRedis, free_port
from tests import synthetic
from tests.helpers import Service, frozen, wait_until

STREAM = "sentiment:requests:sentiment:1"
POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant"]
NEGATIVE = ["awful", "boring", "terrible", "dull", "waste"]


class Waits:
    """A client's ``sleep``: records every wait, then calls ``then(n, seconds)`` (default: no real sleep)."""

    def __init__(self, then=None):
        self.waits: list[float] = []
        self.then = then

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.then is not None:
            self.then(len(self.waits), seconds)


def predict_responses(service: Service, status: int) -> float:
    """How many ``POST /predict`` answers with this status the API has sent, from its own metrics."""
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    found = re.search(rf'^sentiment_http_requests_total{{route="/predict",status="{status}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def mixed_texts(n: int, seed: int = 3) -> list[str]:
    """Distinct reviews of all lengths, two positive for one negative: scores spread over (0, 1)."""
    rng = random.Random(seed)
    return [synthetic.review(rng, i % 3 != 0, length=rng.randint(2, 40)) for i in range(n)]


@pytest.fixture
def client(service):
    with SentimentClient(service.url, timeout=10) as c:
        yield c


# --- predictions ----------------------------------------------------------------------------


def test_single_text_and_a_list(client):
    prediction = client.predict("great wonderful superb loved it")
    assert isinstance(prediction, Prediction)
    assert prediction.label == "positive" and 0.5 < prediction.score <= 1
    assert prediction.truncated is False and prediction.tokens == 5
    assert prediction.model == ModelRef("sentiment", 1)
    assert re.fullmatch(r"[0-9a-f]{32}", prediction.request_id)

    predictions = client.predict(["awful boring terrible waste", "great wonderful superb loved", "the worst dull mess"])
    assert [p.label for p in predictions] == ["negative", "positive", "negative"]
    assert client.predict(["great"] * 1)[0].label == client.predict("great").label
    assert client.predict([]) == []


def test_thirty_texts_are_split_into_requests_of_eight_answered_in_order(service, client):
    texts = mixed_texts(30)
    singles = [client.predict(text).score for text in texts]
    assert len({round(score, 3) for score in singles}) >= 20  # a shuffled answer could not pass unnoticed

    before = predict_responses(service, 200)
    predictions = client.predict(texts, request_id="split-call")
    assert predict_responses(service, 200) - before == 4  # ceil(30 / 8) requests
    assert client.limits().max_texts_per_request == 8  # read from GET /model
    assert [p.request_id for p in predictions] == [f"split-call.{n}" for n in (0, 1, 2, 3) for _ in range(8)][:30]
    for text, single, prediction in zip(texts, singles, predictions, strict=True):
        assert prediction.score == pytest.approx(single, abs=1e-5), text


def test_body_limit_splits_too(service):
    """8 texts fit the count limit, but at 14 kB of UTF-8 each not the 64 KiB body limit: two requests, no 413."""
    texts = [f"superb {i} " + "€" * 4800 for i in range(8)]  # 4,810 characters, 14,410 bytes each
    with SentimentClient(service.url) as c:
        assert c.limits().max_body_bytes == 65536
        before = predict_responses(service, 200)
        predictions = c.predict(texts)
    assert predict_responses(service, 200) - before == 2 and len(predictions) == 8


def test_explanations_are_typed(client):
    prediction = client.predict("the movie was great wonderful superb, loved it", explain=True)
    explanation = prediction.explanation
    assert explanation is not None and explanation.method == "gradient_x_input" and prediction.windows == 1
    assert [t.token for t in explanation.tokens] == ["the", "movie", "was", "great", "wonderful", "superb", "loved", "it"]
    assert all(t.read and isinstance(t.weight, float) for t in explanation.tokens)
    strongest = explanation.strongest(3)
    assert len(strongest) == 3 and abs(strongest[0].weight) == max(abs(t.weight) for t in explanation.tokens)
    assert client.predict("fine").explanation is None


def test_unknown_fields_of_a_prediction_are_kept(service):
    """A newer service may add fields to a prediction: kept in ``extra``, and the call does not fail."""
    with Proxy(service.url, add_field={"sentiment_v99_field": 3}) as proxy, SentimentClient(proxy.url) as c:
        prediction = c.predict("great superb")
    assert prediction.extra == {"sentiment_v99_field": 3} and prediction.to_dict()["sentiment_v99_field"] == 3
    assert prediction.label == "positive"


# --- headers --------------------------------------------------------------------------------


def test_request_id_is_sent_and_echoed(client):
    prediction = client.predict("great film", request_id="orders-42:retry/1")
    assert prediction.request_id == "orders-42:retry/1"
    with pytest.raises(BadRequestError) as caught:
        client.predict("   ", request_id="bad-one-7")
    assert caught.value.request_id == "bad-one-7"
    with pytest.raises(ValueError):
        client.predict("great", request_id="has spaces")


def test_the_server_stops_at_the_clients_timeout(service):
    """The worker is frozen: the server's own deadline is 2 s, yet its 504 comes inside the client's 1.5 s (X-Deadline-Ms)."""
    waits = Waits()
    client = SentimentClient(service.url, timeout=1.5, sleep=waits)
    with client, frozen(service.workers[0]), pytest.raises(DeadlineExceededError) as caught:
        client.predict("great")
    assert caught.value.status == 504 and caught.value.code == "deadline_exceeded"  # the server's, not the client's "timeout"
    assert waits.waits == []  # a 504 is never retried: the budget is spent
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: r.xlen(STREAM) == 0, 5, what="the expired request to be retired")


def test_headers_seen_by_a_proxy(service):
    """The same X-Request-ID on every attempt, and an X-Deadline-Ms within the time left of the client's budget."""
    with Proxy(service.url, reject=2, retry_after_s=1) as proxy, SentimentClient(proxy.url, timeout=5, sleep=Waits()) as c:
        c.predict("great superb", request_id="same-id")
    posts = [headers for method, headers in proxy.seen if method == "POST"]
    assert [h["x-request-id"] for h in posts] == ["same-id"] * 3
    deadlines = [int(h["x-deadline-ms"]) for h in posts]
    assert all(0 < d <= 5000 for d in deadlines) and deadlines == sorted(deadlines, reverse=True)


# --- errors ---------------------------------------------------------------------------------


def test_blank_text_is_a_typed_400_and_not_retried(service):
    waits = Waits()
    before = predict_responses(service, 400)
    with SentimentClient(service.url, retries=3, sleep=waits) as c, pytest.raises(BadRequestError) as caught:
        c.predict(["great", "   "])
    error = caught.value
    assert error.status == 400 and error.code == "bad_request" and "texts[1]" in error.message
    assert error.attempts == 1 and waits.waits == []
    assert predict_responses(service, 400) - before == 1  # the server saw one request


def test_text_over_the_char_limit_is_a_typed_413_and_not_retried(service):
    waits = Waits()
    before = predict_responses(service, 413)
    with SentimentClient(service.url, retries=3, sleep=waits) as c, pytest.raises(PayloadTooLargeError) as caught:
        c.predict("great " * 1000)  # 6,000 characters; the limit here is 5,000
    error = caught.value
    assert error.status == 413 and error.code == "payload_too_large" and "5000" in error.message and error.request_id
    assert error.attempts == 1 and waits.waits == []
    assert predict_responses(service, 413) - before == 1


def test_an_error_in_one_part_of_a_split_call_names_its_texts(service):
    texts = mixed_texts(20)
    texts[13] = " "
    with SentimentClient(service.url) as c, pytest.raises(BadRequestError) as caught:
        c.predict(texts, request_id="parts")
    assert caught.value.texts == range(8, 16) and caught.value.request_id == "parts.1"
    assert "texts 8-15 of the call" in str(caught.value)


def test_connection_refused_is_retried_with_jittered_backoff_then_a_transport_error():
    waits = Waits()
    client = SentimentClient(f"http://127.0.0.1:{free_port()}", retries=4, backoff_base_s=0.1, backoff_max_s=0.3, sleep=waits)
    with client, pytest.raises(TransportError) as caught:
        client.predict("great")
    assert caught.value.code == "connection_error" and caught.value.status is None and caught.value.attempts == 5
    assert len(waits.waits) == 4
    for retry, wait in enumerate(waits.waits):
        assert 0 <= wait <= min(0.3, 0.1 * 2**retry)  # full jitter under an exponential cap


def test_429_with_an_http_date_is_retried_after_that_date(service):
    waits = Waits()
    with Proxy(service.url, reject=2, retry_after_s=3, as_date=True) as proxy, SentimentClient(proxy.url, retries=3, sleep=waits) as c:
        prediction = c.predict("great wonderful superb")
    assert prediction.label == "positive"
    # The date is 3 s ahead, cut to whole seconds, read a moment later on a busy machine: between 1 and 3 s of wait.
    # Ignoring it, the backoff would wait at most 0.2 s.
    assert len(waits.waits) == 2 and all(1.0 <= w <= 3.0 for w in waits.waits), waits.waits


def test_429_retries_exhausted_is_a_typed_overloaded_error(service):
    waits = Waits()
    proxy = Proxy(service.url, reject=10, retry_after_s=1)
    with proxy, SentimentClient(proxy.url, retries=2, sleep=waits) as c, pytest.raises(OverloadedError) as caught:
        c.predict("great")
    error = caught.value
    assert error.status == 429 and error.code == "too_many_requests" and "Too Many Requests" in error.message
    assert error.retry_after == 1.0 and error.attempts == 3 and waits.waits == [1.0, 1.0]


def test_a_wait_longer_than_the_time_left_is_not_waited(service):
    """Retry-After of 60 s and a 5 s budget: fail at once with the server's error, don't sleep into the timeout."""
    waits = Waits()
    proxy = Proxy(service.url, reject=1, retry_after_s=60)
    with proxy, SentimentClient(proxy.url, timeout=5, retries=3, sleep=waits) as c, pytest.raises(OverloadedError) as caught:
        c.predict("great")
    assert caught.value.retry_after == 60 and caught.value.attempts == 1 and waits.waits == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("0", 0.0), (" 7 ", 7.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0), ("soon", None), ("-1", None), ("", None), (None, None)],
)
def test_retry_after_values(value, seconds):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(value, now=now) == seconds


# --- connections ----------------------------------------------------------------------------


def test_connections_are_kept_alive_and_a_dropped_one_is_replaced_without_a_retry(service):
    waits = Waits()
    with Proxy(service.url) as proxy, SentimentClient(proxy.url, sleep=waits) as c:
        for _ in range(5):
            assert c.predict("great").label == "positive"
        assert proxy.connections == 1
    with Proxy(service.url, drop_after_answer=True) as proxy, SentimentClient(proxy.url, sleep=waits) as c:
        for _ in range(3):
            assert c.predict("great").label == "positive"
        assert proxy.connections == 3
    assert waits.waits == []


def test_one_client_shared_by_threads(client):
    texts = mixed_texts(24)
    expected = [p.score for p in client.predict(texts)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: (i, client.predict(texts[i : i + 12])), range(0, 24, 2)))
    for i, predictions in answers:
        assert [p.score for p in predictions] == pytest.approx(expected[i : i + 12], abs=1e-5)


# --- a queue that fills up, a worker that stops: their own service -----------------------------


@pytest.fixture(scope="module")
def fragile(tiny_model_store, tmp_path_factory):
    """A queue of 2, ``Retry-After: 2``, and a worker counted alive for 30 s after its last beat (frozen is not dead)."""
    with EmbeddedRedis() as server:
        svc = Service(
            server.url,
            tiny_model_store,
            settings={
                "SENTIMENT_QUEUE_MAX_REQUESTS": "2",
                "SENTIMENT_RETRY_AFTER_S": "2",
                "SENTIMENT_HEARTBEAT_TTL_S": "30",
                "SENTIMENT_STEP_OVERHEAD_TEXTS": "4",  # how batches split by length does not matter here: skip measuring it at start
                "SENTIMENT_MAX_WINDOWS_PER_REQUEST": "6",  # the tiny model reads windows of 16 tokens
            },
            log_dir=tmp_path_factory.mktemp("fragile-logs"),
        )
        with svc.running():
            yield svc


@pytest.mark.slow
def test_full_queue_is_retried_until_the_worker_thaws_and_exhausted_retries_raise_overloaded(fragile):
    worker = fragile.workers[0]
    r = redis.Redis.from_url(fragile.redis_url)
    wait_until(lambda: r.xlen(STREAM) == 0, 5, what="an empty queue")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            fillers = [pool.submit(fragile.predict, {"text": f"great {i}"}) for i in range(2)]
            wait_until(lambda: r.xlen(STREAM) >= 2, 5, what="the queue to fill")

            waits = Waits()
            with SentimentClient(fragile.url, timeout=30, retries=2, sleep=waits) as c, pytest.raises(OverloadedError) as caught:
                c.predict("great superb")
            error = caught.value
            assert error.status == 503 and error.code == "overloaded" and error.retry_after == 2.0 and error.attempts == 3
            assert waits.waits == [2.0, 2.0]  # Retry-After is the floor of every wait

            def thaw_before_the_second_wait(n: int, seconds: float) -> None:
                if n == 2:
                    os.kill(worker.pid, signal.SIGCONT)
                    time.sleep(seconds)

            waits = Waits(then=thaw_before_the_second_wait)
            with SentimentClient(fragile.url, timeout=30, retries=3, sleep=waits) as c:
                prediction = c.predict("great wonderful superb")
            assert prediction.label == "positive"
            assert waits.waits == [2.0, 2.0]  # overloaded twice, answered on the third attempt
            assert {f.result().status_code for f in fillers} <= {200, 504}
    finally:
        os.kill(worker.pid, signal.SIGCONT)


@pytest.mark.slow
def test_a_request_with_too_many_windows_is_sent_again_in_halves(fragile):
    """Long texts are read in several windows, which the server bounds per request (413): the client halves the list."""
    texts = [f"great superb movie number {i} " * 8 for i in range(4)]  # 40 tokens: 3 windows each, 12 in all (limit 6)
    with SentimentClient(fragile.url, timeout=20) as c:
        together = c.predict(texts)
        alone = [c.predict(text) for text in texts]
    assert [p.windows for p in together] == [3, 3, 3, 3]
    assert [p.score for p in together] == pytest.approx([p.score for p in alone], abs=1e-5)  # in order


@pytest.mark.slow
def test_stopped_worker_is_a_typed_unavailable_error(fragile):
    worker = fragile.workers[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    # The API re-reads the workers' heartbeats at most once a second.
    wait_until(lambda: fragile.predict({"text": "great"}).status_code == 503, 5, what="the API to see no worker")
    waits = Waits()
    with SentimentClient(fragile.url, retries=2, sleep=waits) as c, pytest.raises(UnavailableError) as caught:
        c.predict("great")
    error = caught.value
    assert error.status == 503 and error.code == "unavailable" and "worker" in error.message
    assert error.retry_after == 2.0 and error.attempts == 3 and waits.waits == [2.0, 2.0]


# --- the command line -----------------------------------------------------------------------


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sentiment_client", *args], input=stdin, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_cli_with_arguments(service, client):
    texts = ["great wonderful superb loved", "awful boring terrible waste", "brilliant movie"]
    done = run_cli("--url", service.url, "--timeout", "5", *texts)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    expected = client.predict(texts)
    assert [line["index"] for line in lines] == [0, 1, 2]
    for line, prediction in zip(lines, expected, strict=True):
        assert set(line) == {"index", "label", "score", "truncated", "tokens", "windows", "scores"}
        assert set(line["scores"]) == {"negative", "positive"}
        assert line["score"] == pytest.approx(prediction.score, abs=1e-5) and line["tokens"] == prediction.tokens
    assert [line["label"] for line in lines] == ["positive", "negative", "positive"]


@pytest.mark.slow
def test_cli_with_stdin_and_the_url_from_the_environment(service, client):
    lines = [*mixed_texts(20), "", "great superb"]  # a blank line is skipped; indexes are line numbers
    done = run_cli(stdin="\n".join(lines) + "\n", env={"SENTIMENT_URL": service.url})
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["index"] for o in out] == [*range(20), 21]
    expected = client.predict([lines[o["index"]] for o in out])
    assert [o["score"] for o in out] == pytest.approx([p.score for p in expected], abs=1e-5)
    assert [o["tokens"] for o in out] == [p.tokens for p in expected]


@pytest.mark.slow
def test_cli_errors(service):
    done = run_cli("--url", service.url, "great", "   ")
    assert done.returncode == 1 and done.stdout == ""
    assert "400 bad_request" in done.stderr and "texts[1] is empty" in done.stderr and "Traceback" not in done.stderr

    done = run_cli("--url", f"http://127.0.0.1:{free_port()}", "--retries", "0", "great")
    assert done.returncode == 1 and "connection_error" in done.stderr and "Traceback" not in done.stderr

    done = run_cli("--url", "ftp://nowhere", "great")
    assert done.returncode == 2 and "http://host:port" in done.stderr

    done = run_cli("--timeout", "-1", "great")
    assert done.returncode == 2 and "--timeout" in done.stderr

    done = run_cli("--help")
    assert done.returncode == 0 and "--retries" in done.stdout and "stdin" in done.stdout


# --- a real HTTP proxy in front of the service --------------------------------------------------


class Proxy:
    """Forwards to the service over HTTP/1.1 keep-alive, and can misbehave as real proxies do.

    ``reject``: answer the first n ``POST``s 429 with an HTML body and ``Retry-After`` (seconds, or an
    HTTP date with ``as_date``). ``drop_after_answer``: close each connection after its answer without
    saying so. ``add_field``: add fields to every prediction (a newer service). Records each request's
    method and headers, and counts TCP connections.
    """

    def __init__(
        self, upstream: str, reject: int = 0, retry_after_s: int = 1, as_date: bool = False, drop_after_answer: bool = False, add_field=None
    ):
        self.upstream = urlsplit(upstream)
        self.reject, self.retry_after_s, self.as_date = reject, retry_after_s, as_date
        self.drop_after_answer, self.add_field = drop_after_answer, add_field
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Proxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections += 1

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.seen.append((self.command, {k.lower(): v for k, v in self.headers.items()}))
                    rejected = self.command == "POST" and proxy.reject > 0
                    proxy.reject -= rejected
                if rejected:
                    when = formatdate(time.time() + proxy.retry_after_s, usegmt=True) if proxy.as_date else str(proxy.retry_after_s)
                    self._send(
                        429, b"<html><body><h1>429 Too Many Requests</h1></body></html>", {"Content-Type": "text/html", "Retry-After": when}
                    )
                else:
                    self._forward(body)
                if proxy.drop_after_answer:
                    self.close_connection = True

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=15)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    if proxy.add_field and answer.status == 200 and self.path == "/predict":
                        decoded = json.loads(payload)
                        for prediction in decoded["predictions"]:
                            prediction.update(proxy.add_field)
                        payload = json.dumps(decoded).encode()
                    keep = {k: v for k, v in answer.getheaders() if k.lower() in ("content-type", "x-request-id", "retry-after")}
                    self._send(answer.status, payload, keep)
                finally:
                    upstream.close()

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
