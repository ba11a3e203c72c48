"""The HTTP contract, against the real API under gunicorn, a real worker, a real Redis."""

from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.helpers import frozen, timed_predict, wait_until


def post_raw(service, body: bytes, content_type: str | None = "application/json", headers: dict | None = None) -> requests.Response:
    all_headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    return requests.post(f"{service.url}/predict", data=body, headers=all_headers, timeout=10)


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    assert response.headers.get("X-Request-ID")
    return body


# --- the happy path ------------------------------------------------------------------


def test_single_text(service):
    response = service.predict({"text": "the movie was great wonderful superb, i loved it"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "model", "request_id"}
    assert body["model"] == {"name": "sentiment", "version": 1}
    [prediction] = body["predictions"]
    assert prediction["label"] == "positive" and 0.5 < prediction["score"] <= 1
    assert prediction["truncated"] is False and prediction["tokens"] == 9
    assert body["request_id"] == response.headers["X-Request-ID"] and len(body["request_id"]) >= 16


def test_batch_keeps_input_order(service):
    texts = ["awful boring terrible waste", "great wonderful superb loved", "the worst dull mess", "brilliant excellent masterpiece"]
    response = service.predict({"texts": texts})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == ["negative", "positive", "negative", "positive"]


def test_request_id_is_echoed(service):
    response = service.predict({"text": "great film"}, headers={"X-Request-ID": "client-42"})
    assert response.headers["X-Request-ID"] == "client-42" and response.json()["request_id"] == "client-42"


def test_a_text_past_the_window_bound_loses_its_middle_and_says_so(service):
    """The tiny model reads windows of 16 tokens, at most 4 a text: 200 tokens are read as 4 windows of 64."""
    [prediction] = service.predict({"text": "great movie " * 100}).json()["predictions"]
    assert prediction["truncated"] is True and prediction["tokens"] == 200 and prediction["windows"] == 4


def predict_text_scores(tiny_model_store, texts: list[str]) -> list[float]:
    """The artifact's own answer: ``predict_text`` (tokenizer and long-text policy in TensorFlow ops)."""
    import tensorflow as tf

    from service.model_store import resolve

    version = resolve(tiny_model_store / "sentiment", 1)
    return tf.saved_model.load(str(version.path)).signatures["predict_text"](texts=tf.constant(texts))["probability"].numpy().tolist()


def test_long_texts_are_read_whole_in_windows_and_scored_like_the_artifact(service, tiny_model_store):
    words = ["great", "awful", "the", "movie", "plot", "boring", "superb", "film", "dull", "loved"]
    long_40 = " ".join(words[(i * 7) % 10] for i in range(40))  # 3 windows of 13-14 tokens
    long_60 = " ".join(words[(i * 3) % 10] for i in range(60))  # 4 windows of 15
    texts = ["great superb", long_40, "awful dull boring", long_60]
    response = service.predict({"texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    read = [(p["windows"], p["truncated"], p["tokens"]) for p in predictions]
    assert read == [(1, False, 2), (3, False, 40), (1, False, 3), (4, False, 60)]
    expected = predict_text_scores(tiny_model_store, texts)
    for prediction, score in zip(predictions, expected, strict=True):
        assert prediction["score"] == pytest.approx(score, abs=1e-5)
    # Each text's score is its own: alone or beside others of any length.
    for text, prediction in zip(texts, predictions, strict=True):
        [alone] = service.predict({"text": text}).json()["predictions"]
        assert alone["score"] == pytest.approx(prediction["score"], abs=1e-5)


def test_health_readiness_model_and_metrics(service):
    assert requests.get(f"{service.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{service.url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] >= 1
    info = requests.get(f"{service.url}/model", timeout=5).json()
    assert info["version"] == 1 and "metrics" in info["metadata"]
    service.predict({"text": "fine"})
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    assert 'sentiment_http_requests_total{route="/predict",status="200"}' in text
    assert "sentiment_queue_backlog" in text and 'sentiment_live_workers{model="sentiment",version="1"} 1.0' in text


# --- bad input: a clear 4xx, never a 500 ------------------------------------------------

BAD_JSON_BODIES = [
    (b"{", 400),
    (b'{"text": }', 400),
    (b"[]", 400),
    (b'"just a string"', 400),
    (b'{"text": 5}', 400),
    (b'{"text": null}', 400),
    (b'{"texts": "not a list"}', 400),
    (b'{"texts": ["ok", 7]}', 400),
    (b'{"text": "a", "texts": ["b"]}', 400),
    (b"{}", 400),
    (b'{"text": "a", "extra": 1}', 400),
    (b'{"text": ""}', 400),
    (b'{"text": "   \\n\\t "}', 400),
    (b'{"texts": []}', 400),
    (b'{"texts": ["fine", ""]}', 400),
    (b'{"text": "nul \\u0000 inside"}', 400),
    (b'{"text": "raw nul \x00 byte"}', 400),
    (b'{"text": "bad utf-8 \xff\xfe"}', 400),
    (b'{"text": "lone surrogate \\ud800"}', 400),
    (b"", 400),
    (b"[" * 20_000 + b"]" * 20_000, 400),
    (b'{"texts": ' + b'["x", ' * 9 + b'"x"' + b"]" * 10 + b"}", 400),
    (b'{"texts": ["a","b","c","d","e","f","g","h","i"]}', 413),
    (b'{"text": "' + b"a" * 5001 + b'"}', 413),
]


@pytest.mark.parametrize(("body", "status"), BAD_JSON_BODIES, ids=[f"{b[:30]!r}-{s}" for b, s in BAD_JSON_BODIES])
def test_bad_bodies_get_a_clear_error(service, body, status):
    assert_error(post_raw(service, body), status)


def test_body_over_the_limit_is_413(service):
    assert_error(post_raw(service, b'{"text": "' + b"a" * 70_000 + b'"}'), 413, "request_entity_too_large")


def test_ten_megabyte_body_is_refused_without_reading_it(service):
    """Refused on its Content-Length: the 413 arrives even though the client is still sending."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {10 * 2**20}\r\n\r\n"
        conn.sendall(head.encode() + b'{"text": "' + b"a" * 4096)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert service.predict({"text": "still fine"}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_type_is_415(service, content_type):
    assert_error(post_raw(service, b'{"text": "hi"}', content_type), 415, "unsupported_media_type")


def test_unknown_path_is_404_and_wrong_method_405(service):
    assert_error(requests.get(f"{service.url}/nope", timeout=5), 404, "not_found")
    response = requests.get(f"{service.url}/predict", timeout=5)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_bad_deadline_header_is_400(service, value):
    assert_error(service.predict({"text": "hi"}, headers={"X-Deadline-Ms": value}), 400)


@pytest.mark.parametrize("value", ["has space", "x" * 129, "semi;colon"])
def test_bad_request_id_is_400(service, value):
    assert_error(service.predict({"text": "hi"}, headers={"X-Request-ID": value}), 400)


def test_bad_input_does_not_hurt_concurrent_good_requests(service):
    bad = [b"{", b"[" * 20_000, b'{"text": 5}', b'{"text": "\xff"}'] * 10

    def good(i: int) -> int:
        return service.predict({"text": f"great wonderful film number {i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        bad_statuses = pool.map(lambda b: post_raw(service, b).status_code, bad)
        good_statuses = list(pool.map(good, range(40)))
    assert set(bad_statuses) == {400} and set(good_statuses) == {200}


# --- concurrency: every client gets its own answer -----------------------------------


@pytest.mark.slow
def test_concurrent_clients_get_their_own_answers(service, tiny_model_store):
    """Distinct texts from 16 threads at once; each answer must be its own text's score."""
    import numpy as np
    import tensorflow as tf

    from service.model_store import resolve

    words = ["great", "awful", "boring", "superb", "the", "movie", "plot", "dull", "loved", "mess"]
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(240)]
    version = resolve(tiny_model_store / "sentiment", 1)
    predict_text = tf.saved_model.load(str(version.path)).signatures["predict_text"]
    expected = predict_text(texts=tf.constant(texts))["probability"].numpy()

    def ask(i: int):
        if i % 3 == 0:  # some requests carry several texts
            group = [i, (i + 1) % len(texts)]
            response = service.predict({"texts": [texts[j] for j in group]})
        else:
            group = [i]
            response = service.predict({"text": texts[i]})
        return group, response

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(len(texts))))
    for group, response in results:
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == len(group)
        for j, prediction in zip(group, predictions, strict=True):
            assert prediction["score"] == pytest.approx(float(expected[j]), abs=1e-4), texts[j]
            assert prediction["tokens"] == len(texts[j].split())


def test_idle_keep_alive_connections_beyond_the_request_limit_keep_no_caller_out(service):
    """Callers' connection pools hold more idle keep-alive connections than the process serves requests at once
    (SENTIMENT_API_CONCURRENCY is 32 here): a new caller is still answered at once, and the idle connections stay
    open. Were connections the request limit, the new caller would wait until gunicorn closed idle ones (5 s)."""
    host, port = service.url.removeprefix("http://").split(":")
    pooled = [http.client.HTTPConnection(host, int(port), timeout=3) for _ in range(48)]
    try:
        for connection in pooled:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
        answer = requests.post(f"{service.url}/predict", json={"text": "great"}, timeout=3)
        assert answer.status_code == 200, answer.text
        for connection in pooled:  # reused: none was closed to make room
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        for connection in pooled:
            connection.close()


# --- deadlines and back-pressure: a frozen worker ------------------------------------


def test_deadline_passes_gives_504_and_the_worker_skips_it(service):
    with frozen(service.workers[0]):
        response, elapsed = timed_predict(service, {"text": "great"}, {"X-Deadline-Ms": "300"})
    assert_error(response, 504, "deadline_exceeded")
    assert 0.29 <= elapsed < 1.0
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: r.xlen("sentiment:requests:sentiment:1") == 0, 5, what="the expired entry to be retired")
    assert list(r.scan_iter("sentiment:result:*")) == []  # retired without running the model: no result was written
    assert service.predict({"text": "great"}).status_code == 200


@pytest.mark.parametrize("deadline_ms", [1, 2, 5])
def test_tiny_deadlines_get_504_or_200_at_once_never_503(service, deadline_ms):
    """A deadline under a millisecond or two used to become a blocking wait that Redis read as "forever"."""
    for _ in range(5):
        response, elapsed = timed_predict(service, {"text": "great superb film"}, {"X-Deadline-Ms": str(deadline_ms)})
        assert response.status_code in (200, 504), response.text
        if response.status_code == 504:
            assert_error(response, 504, "deadline_exceeded")
        assert elapsed < deadline_ms / 1000 + 0.25  # the HTTP round trip on a busy machine, not seconds
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    assert "sentiment_redis_errors_total 0.0" in text or "sentiment_redis_errors_total" not in text  # no false alarm


def test_server_default_deadline_caps_the_client_one(service):
    with frozen(service.workers[0]):
        response, elapsed = timed_predict(service, {"text": "great"}, {"X-Deadline-Ms": "999999"})
    assert_error(response, 504)
    assert elapsed < 3.0  # the server default (2 s), not the 999 s asked for


def test_full_queue_answers_503_at_once_with_retry_after(service):
    limit = int(service.settings["SENTIMENT_QUEUE_MAX_REQUESTS"])
    r = redis.Redis.from_url(service.redis_url)
    wait_until(lambda: r.xlen("sentiment:requests:sentiment:1") == 0, 5, what="an empty queue")
    with ThreadPoolExecutor(limit) as pool:
        with frozen(service.workers[0]):
            waiting = [pool.submit(service.predict, {"text": f"great {i}"}, {"X-Deadline-Ms": "1500"}) for i in range(limit)]
            wait_until(lambda: r.xlen("sentiment:requests:sentiment:1") >= limit, 5, what="the queue to fill")
            rejected, elapsed = timed_predict(service, {"text": "one too many"})
        statuses = [f.result().status_code for f in waiting]
    assert_error(rejected, 503, "overloaded")
    assert rejected.headers["Retry-After"] == "1" and elapsed < 0.5
    assert set(statuses) <= {200, 504}  # queued ones are answered, or time out: never lost


@pytest.mark.slow
def test_window_bounds_per_request_and_per_text(module_redis, tiny_model_store, tmp_path):
    from tests.helpers import Service

    settings = {"SENTIMENT_MAX_WINDOWS_PER_REQUEST": "6", "SENTIMENT_MAX_WINDOWS_PER_TEXT": "2", "SENTIMENT_REDIS_KEY_PREFIX": "bounds"}
    long_text = "great movie " * 40  # 80 tokens: 2 windows of 16 at most, so the middle is cut
    with Service(module_redis.url, tiny_model_store, settings=settings, log_dir=tmp_path).running() as svc:
        [prediction] = svc.predict({"text": long_text}).json()["predictions"]
        assert prediction["windows"] == 2 and prediction["truncated"] is True and prediction["tokens"] == 80
        assert_error(svc.predict({"texts": [long_text] * 4}), 413, "payload_too_large")  # 8 windows, limit 6
        assert svc.predict({"texts": [long_text] * 3}).status_code == 200  # 6 windows


@pytest.mark.slow
def test_the_head_tail_setting_keeps_the_old_policy(module_redis, tiny_model_store, tmp_path):
    import tensorflow as tf

    from service.model_store import resolve
    from tests.helpers import Service

    text = " ".join(["great", "awful", "movie", "dull", "superb"][i % 5] for i in range(100))  # 100 tokens, max_length 48
    settings = {"SENTIMENT_LONG_TEXT_POLICY": "head_tail", "SENTIMENT_REDIS_KEY_PREFIX": "headtail"}
    with Service(module_redis.url, tiny_model_store, settings=settings, log_dir=tmp_path).running() as svc:
        [prediction] = svc.predict({"text": text}).json()["predictions"]
    assert prediction["windows"] == 1 and prediction["truncated"] is True and prediction["tokens"] == 100
    version = resolve(tiny_model_store / "sentiment", 1)
    tokenizer = version.load_tokenizer()
    head_tail = tokenizer.with_policy(type(tokenizer.long_texts)("head_tail", tokenizer.max_length)).encode(text)
    serve = tf.saved_model.load(str(version.path)).signatures["serving_default"]
    expected = float(serve(token_ids=tf.constant([head_tail.ids]))["probability"].numpy()[0])
    assert prediction["score"] == pytest.approx(expected, abs=1e-5)
