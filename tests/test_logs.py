"""Logs: JSON lines from every process, one access line per request, one line per batch, never a review's text."""

from __future__ import annotations

import json

import pytest
import requests

from service.logs import BENIGN_NATIVE_LINES
from tests.helpers import Service

pytestmark = pytest.mark.slow  # Services of their own, read through their logs: end to end.

SECRET_REVIEW = "Quokkafied marmalade symphony, Xylophonist Zanzibar: great superb acting"
SECRET_WORDS = ("quokkafied", "marmalade", "xylophonist", "zanzibar")


@pytest.fixture(scope="module")
def logged(module_redis, tiny_model_store, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    settings = {"SENTIMENT_LOG_LEVEL": "DEBUG", "SENTIMENT_LOG_FORMAT": "json"}
    svc = Service(module_redis.url, tiny_model_store, settings=settings, log_dir=logs)
    with svc.running():
        ok = svc.predict({"texts": [SECRET_REVIEW, "awful boring"]}, headers={"X-Request-ID": "trace-me-1"})
        assert ok.status_code == 200, ok.text
        refused = svc.predict({"text": "  "}, headers={"X-Request-ID": "refused-1"})
        assert refused.status_code == 400
        too_long = svc.predict({"text": SECRET_REVIEW * 2000}, headers={"X-Request-ID": "too-long-1"})
        assert too_long.status_code == 413
        assert requests.get(f"{svc.url}/nope", timeout=5).status_code == 404
    yield {name: (logs / f"{name}.log").read_text(encoding="utf-8") for name in ("api", "worker0")}


def lines(text: str) -> list[dict]:
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)  # every line of every process is one JSON object
        assert {"time", "level", "logger", "pid", "message"} <= set(record), line
        parsed.append(record)
    return parsed


def test_every_line_of_every_process_is_json(logged):
    api, worker = lines(logged["api"]), lines(logged["worker0"])
    assert any(r["logger"].startswith("gunicorn") for r in api)  # gunicorn's own messages too
    assert any(r["logger"] == "service.worker" for r in worker)


def test_one_access_line_per_request_with_its_fields(logged):
    access = [r for r in lines(logged["api"]) if r["logger"] == "service.access"]
    [line] = [r for r in access if r["request_id"] == "trace-me-1"]
    assert line["route"] == "/predict" and line["status"] == 200 and line["method"] == "POST"
    assert line["texts"] == 2 and line["tokens"] == 10 and line["truncated"] == 0
    assert line["latency_ms"] > 0 and line["queue_wait_ms"] >= 0
    [refused] = [r for r in access if r["request_id"] == "refused-1"]
    assert refused["status"] == 400 and refused["error"] == "bad_request"
    [too_long] = [r for r in access if r["request_id"] == "too-long-1"]
    assert too_long["status"] == 413 and too_long["error"] == "payload_too_large"
    assert any(r["status"] == 404 and r["route"] == "unmatched" for r in access)


def test_a_request_can_be_followed_to_its_batch(logged):
    batches = [r for r in lines(logged["worker0"]) if r["message"] == "batch"]
    [batch] = [b for b in batches if "trace-me-1" in b["request_ids"]]
    assert batch["texts"] >= 2 and batch["padded_tokens"] >= 2 * 8 and batch["model_ms"] > 0


def test_no_review_text_in_any_log(logged):
    for name, text in logged.items():
        lowered = text.lower()
        for word in SECRET_WORDS:
            assert word not in lowered, f"{word!r} found in the {name} log"


def test_text_format_is_readable_with_the_same_fields(module_redis, tiny_model_store, tmp_path):
    svc = Service(module_redis.url, tiny_model_store, settings={"SENTIMENT_LOG_LEVEL": "INFO"}, log_dir=tmp_path)
    with svc.running():
        assert svc.predict({"text": "great"}, headers={"X-Request-ID": "plain-1"}).status_code == 200
    [line] = [x for x in (tmp_path / "api.log").read_text().splitlines() if "request_id=plain-1" in x]
    assert " INFO " in line and "service.access: request" in line and "status=200" in line and "route=/predict" in line


def test_tensorflows_harmless_errors_are_debug_lines_and_real_ones_stay_errors(logged):
    native = [r for r in lines(logged["worker0"]) if r["logger"] == "native"]
    assert native  # TensorFlow's own lines reach the log, as JSON
    for record in native:
        if BENIGN_NATIVE_LINES.search(record["message"]):
            assert record["level"] == "DEBUG", record
    assert BENIGN_NATIVE_LINES.search("E0000 00:00:1 1 text_format.cc:378] Error parsing text-format tensorflow.XlaSerializedCacheEntry")
    assert not BENIGN_NATIVE_LINES.search("E0000 00:00:1 1 cpu_executable.cc:1] Execution failed: out of memory")
