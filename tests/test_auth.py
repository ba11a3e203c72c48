"""Access control end to end: real gunicorn API processes, a worker, Redis, keys made by the real command line.

Every front door asks for a key; scopes and per-key rates hold, across two API
servers sharing one Redis; abuse (10,000 wrong keys, malformed headers) gets
401/400, never a 500; logs and metrics name keys, never show them; with auth
off, the API will not serve a public interface unless told to.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from sentiment_client import AuthenticationError, PermissionDeniedError, SentimentClient
from service.config import ROOT
from service.embedded_redis import free_port
from tests.helpers import Service, answers_200, child_env, wait_until
from tests.test_demo_page import DemoPage, needs_chromium, start_chromium

INFERENCE_ROUTES = [
    ("POST", "/predict", {"text": "great superb"}),
    ("POST", "/v1/models/sentiment:predict", {"signature_name": "predict_text", "instances": ["great superb"]}),
    (
        "POST",
        "/v2/models/sentiment/infer",
        {"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["great superb"]}]},
    ),
    ("GET", "/model", None),
    ("GET", "/v1/models/sentiment", None),
    ("GET", "/v2/models/sentiment", None),
]
OPEN_ROUTES = ["/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2", "/", "/openapi.json"]


def keys_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.keys", *args], capture_output=True, text=True, timeout=30, cwd=ROOT)


def create_key(key_file, name: str, *options: str) -> str:
    done = keys_cli("create", name, "--file", str(key_file), *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    return tmp_path_factory.mktemp("secrets") / "api-keys.json"


@pytest.fixture(scope="module")
def keys(key_file) -> dict[str, str]:
    return {
        "reader": create_key(key_file, "reader"),
        "explainer": create_key(key_file, "explainer", "--scope", "predict", "--scope", "explain"),
        "limited": create_key(key_file, "limited", "--rate-per-s", "1", "--burst", "4"),
        "admin-only": create_key(key_file, "admin-only", "--scope", "admin"),
    }


@pytest.fixture(scope="module")
def authed(module_redis, tiny_model_store, key_file, keys, tmp_path_factory):
    settings = {
        "SENTIMENT_AUTH": "api_keys",
        "SENTIMENT_API_KEYS_FILE": str(key_file),
        "SENTIMENT_LOG_FORMAT": "json",
        "SENTIMENT_LOG_LEVEL": "INFO",
    }
    svc = Service(module_redis.url, tiny_model_store, settings=settings, api_processes=2, log_dir=tmp_path_factory.mktemp("logs"))
    with svc.running():
        yield svc


def send(service: Service, method: str, path: str, body=None, headers: dict | None = None) -> requests.Response:
    return requests.request(method, service.url + path, json=body, headers=headers, timeout=10)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric_total(service: Service, name: str, **labels: str) -> float:
    total = 0.0
    for line in requests.get(f"{service.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_front_door_asks_for_a_key_and_the_probes_stay_open(authed, keys):
    for method, path, body in INFERENCE_ROUTES:
        refused = send(authed, method, path, body)
        assert refused.status_code == 401, (path, refused.text)
        assert refused.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "API key" in refused.text and refused.headers["X-Request-ID"], path
        for headers in (bearer(keys["reader"]), {"X-API-Key": keys["reader"]}):
            answered = send(authed, method, path, body, headers)
            assert answered.status_code == 200, (path, answered.text)
    for path in OPEN_ROUTES:
        assert requests.get(authed.url + path, timeout=5).status_code == 200, path


def test_a_key_not_in_force_is_401_invalid_token(authed, keys):
    forged = keys["reader"][:-4] + ("AAAA" if not keys["reader"].endswith("AAAA") else "BBBB")
    for key in (forged, "sk_00000000_" + "A" * 43, "not-a-key"):
        refused = send(authed, "POST", "/predict", {"text": "fine"}, bearer(key))
        assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"], key


def test_scopes_explain_needs_explain_and_predict_needs_predict(authed, keys):
    asked = {"text": "great superb", "explain": True}
    refused = send(authed, "POST", "/predict", asked, bearer(keys["reader"]))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden" and "explain" in refused.text
    assert send(authed, "POST", "/predict", asked, bearer(keys["explainer"])).status_code == 200
    assert send(authed, "POST", "/predict", {"text": "fine"}, bearer(keys["admin-only"])).status_code == 403
    assert metric_total(authed, "sentiment_auth_refusals_total", reason="forbidden", key="reader") >= 1


def test_tritonclient_and_the_python_client_send_keys(authed, keys):
    client = triton.InferenceServerClient(authed.url.removeprefix("http://"))
    text = triton.InferInput("texts", [1], "BYTES")
    text.set_data_from_numpy(__import__("numpy").array([b"great superb"], dtype=object))
    with pytest.raises(InferenceServerException, match=r"401|API key"):
        client.infer("sentiment", [text])
    result = client.infer("sentiment", [text], headers=bearer(keys["reader"]))
    assert result.as_numpy("probability").shape[0] == 1
    assert client.is_server_live()  # no key needed

    with SentimentClient(authed.url, api_key=keys["reader"]) as good:
        assert good.predict("great superb").label in ("positive", "negative")
        with pytest.raises(PermissionDeniedError):
            good.predict("great", explain=True)
    with SentimentClient(authed.url, api_key="sk_00000000_" + "A" * 43, retries=0) as bad, pytest.raises(AuthenticationError):
        bad.predict("great")
    os.environ["SENTIMENT_API_KEY"] = keys["explainer"]
    try:
        with SentimentClient(authed.url) as from_env:
            assert from_env.predict("great superb", explain=True).explanation is not None
    finally:
        del os.environ["SENTIMENT_API_KEY"]


def test_malformed_authorization_headers_are_refused_never_a_500(authed, keys):
    host, port = authed.url.removeprefix("http://").split(":")
    cases = [
        ("Authorization", b"Basic dXNlcjpwYXNz"),
        ("Authorization", b"Bearer"),
        ("Authorization", b"Bearer two words"),
        ("Authorization", b"Bearer " + b"A" * 5000),
        ("Authorization", b"Bearer " + "sk_\u00e9".encode()),
        ("Authorization", b"Bearer " + b"\x00\x01"),
        ("X-API-Key", b""),
        ("X-API-Key", b"x" * 20_000),  # beyond the server's header limit: refused before the app sees it
    ]
    for header, value in cases:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader(header, value)
        body = b'{"text": "fine"}'
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        status = connection.getresponse().status
        connection.close()
        assert status in (400, 401, 431), (header, value[:40], status)  # 431: header fields too large
    both = {**bearer(keys["reader"]), "X-API-Key": keys["explainer"]}  # two different keys
    assert send(authed, "POST", "/predict", {"text": "fine"}, both).status_code == 401
    assert send(authed, "POST", "/predict", {"text": "fine"}, bearer(keys["reader"])).status_code == 200


def test_ten_thousand_wrong_keys_are_all_401_counted_and_good_keys_still_served(authed, keys):
    before = metric_total(authed, "sentiment_auth_refusals_total", reason="invalid")
    good_statuses = []

    def hammer(worker: int) -> list[int]:
        statuses = []
        with requests.Session() as session:
            for i in range(1250):
                wrong = f"sk_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
                statuses.append(session.post(f"{authed.url}/predict", json={"text": "x"}, headers=bearer(wrong), timeout=10).status_code)
                if worker == 0 and i % 250 == 0:
                    good = session.post(f"{authed.url}/predict", json={"text": "great"}, headers=bearer(keys["reader"]), timeout=10)
                    good_statuses.append(good.status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(hammer, range(8)) for s in batch]
    assert len(statuses) == 10_000 and set(statuses) == {401}
    assert good_statuses == [200] * 5
    assert metric_total(authed, "sentiment_auth_refusals_total", reason="invalid") - before == 10_000


def test_a_keys_rate_holds_in_sum_across_two_api_servers(authed, keys, module_redis, tiny_model_store, key_file):
    second = Service(module_redis.url, tiny_model_store, settings=dict(authed.settings))
    second.start_api()  # another gunicorn on its own port, the same Redis and key file: another host, as far as keys go
    try:
        started = time.monotonic()
        answers = [send(server, "POST", "/predict", {"text": "great"}, bearer(keys["limited"])) for server in [authed, second] * 8]
        elapsed = time.monotonic() - started
    finally:
        second.stop()
    allowed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(allowed) + len(refused) == len(answers)
    assert 4 <= len(allowed) <= 4 + int(elapsed * 1) + 1  # the burst, plus what 1/s refilled meanwhile
    assert {a.url.split("/predict")[0] for a in refused} == {authed.url, second.url}  # both servers refused: one bucket
    for answer in refused:
        assert int(answer.headers["Retry-After"]) >= 1 and answer.json()["error"]["code"] == "rate_limited"
        assert answer.headers["RateLimit-Policy"] == '"key";q=4;w=4' and answer.headers["RateLimit"].startswith('"key";r=0;')
    assert allowed[0].headers["RateLimit-Policy"] == '"key";q=4;w=4'
    assert metric_total(authed, "sentiment_auth_refusals_total", reason="rate_limited", key="limited") >= 1


def test_a_revoked_key_stops_working_within_seconds_and_a_new_one_starts(authed, key_file):
    key = create_key(key_file, "temporary")
    wait_until(lambda: send(authed, "POST", "/predict", {"text": "ok"}, bearer(key)).status_code == 200, 3, what="the new key")
    done = keys_cli("revoke", "temporary", "--file", str(key_file))
    assert done.returncode == 0, done.stderr
    revoked_at = time.monotonic()
    wait_until(lambda: send(authed, "POST", "/predict", {"text": "ok"}, bearer(key)).status_code == 401, 3, what="the revocation")
    assert time.monotonic() - revoked_at < 3


def test_logs_and_metrics_name_keys_and_never_show_them(authed, keys):
    assert send(authed, "POST", "/predict", {"texts": ["a", "b", "c"]}, bearer(keys["reader"])).status_code == 200
    assert metric_total(authed, "sentiment_key_requests_total", key="reader") >= 1
    assert metric_total(authed, "sentiment_key_texts_total", key="reader") >= 3
    exposition = requests.get(f"{authed.url}/metrics", timeout=5).text
    logs = (authed.log_dir / "api.log").read_text()
    for key in keys.values():
        secret = key.split("_", 2)[2]
        assert secret not in exposition and secret not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("key") == "reader" and line.get("route") == "/predict" and line.get("status") == 200 for line in lines)
    assert any(line.get("status") == 401 and "key" not in line for line in lines)


def start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "gunicorn_conf.py"), "service.api.app:create_app()"]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_without_keys_the_api_refuses_a_public_interface_unless_told(module_redis, tiny_model_store):
    port = free_port()
    base = {
        "SENTIMENT_REDIS_URL": module_redis.url,
        "SENTIMENT_MODEL_STORE": str(tiny_model_store),
        "SENTIMENT_API_PROCESSES": "1",
        "SENTIMENT_HOST": "0.0.0.0",
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    refused = start_gunicorn(child_env(**base), port)
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode != 0 and "SENTIMENT_AUTH" in output, output
    launcher = subprocess.run(
        [sys.executable, "-m", "service.launcher"], env=child_env(**base), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert launcher.returncode != 0 and "SENTIMENT_AUTH" in launcher.stderr, launcher.stderr
    no_file = subprocess.run(
        [sys.executable, "-m", "service.launcher"],
        env=child_env(**{**base, "SENTIMENT_AUTH": "api_keys"}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_file.returncode != 0 and "SENTIMENT_API_KEYS_FILE" in no_file.stderr, no_file.stderr

    allowed = start_gunicorn(child_env(**base, SENTIMENT_ALLOW_ANONYMOUS="1"), port)
    try:
        wait_until(lambda: answers_200(f"http://127.0.0.1:{port}/healthz", allowed), 60, what="the API, told to serve anonymously")
    finally:
        allowed.terminate()
        allowed.communicate(timeout=30)


def test_the_openapi_document_declares_the_keys(authed):
    document = requests.get(f"{authed.url}/openapi.json", timeout=10).json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403", "429"} <= set(predict["responses"]) and "Retry-After" in predict["responses"]["429"]["headers"]
    assert "security" not in document["paths"]["/healthz"]["get"]


@needs_chromium
def test_the_demo_page_asks_for_a_key_and_then_classifies(authed, keys, tmp_path):
    driver = start_chromium(tmp_path / "profile")
    try:
        page = DemoPage(driver, authed.url)
        driver.get(f"{authed.url}/")
        page.wait(lambda _: page.shown("key-form"), "the key form")
        assert "API key" in page.text("key-why")
        page.element("api-key").send_keys(keys["reader"])
        page.element("key-save").click()
        page.wait(lambda _: page.text("model-version") not in ("", "…"), "the model, once the key is given")
        assert not page.shown("key-form")
        page.element("explain").click()  # the reader key may not ask for explanations
        assert page.classify("great superb wonderful").startswith(("Positive", "Negative"))
    finally:
        driver.quit()
