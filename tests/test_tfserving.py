"""TensorFlow Serving's REST API, as its clients use it (plain HTTP and its JSON), against the committed SavedModel.

The reference is the SavedModel itself, run here with TensorFlow: what a
TensorFlow Serving of the same artifact would compute and describe.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import time

import pytest
import requests

from service.embedded_redis import EmbeddedRedis
from service.model_store import is_complete, resolve
from service.packing import float32_json
from tests.conftest import COMMITTED_MODEL_DIR
from tests.helpers import Service, assert_standard_error, frozen, timed_predict

pytestmark = pytest.mark.slow  # The committed model behind a live service: end to end.

TEXTS = [
    "A moving, beautifully acted film.",
    "Dull, predictable and far too long.",
    "Not bad at all!",
    "Two hours I will never get back?!",
    "Broke after two days, do not buy.",
    "Ce film est magnifique, vraiment. 映画 ✓",
    "it's the director's best... or is it?",
    "x",
    " ".join(["great", "awful", "boring", "superb", "plot"] * 120),  # 600 tokens: truncated to head + tail
]
MAX_TEXTS = 8


@pytest.fixture(scope="module")
def committed():
    return resolve(COMMITTED_MODEL_DIR)


@pytest.fixture(scope="module")
def saved_model(committed):
    import tensorflow as tf

    return tf.saved_model.load(str(committed.path))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The API and one worker on the committed model store, as `make run` serves it (with smaller request limits)."""
    settings = {
        "SENTIMENT_MAX_TEXTS_PER_REQUEST": str(MAX_TEXTS),
        "SENTIMENT_MAX_TEXT_CHARS": "5000",
    }
    logs = tmp_path_factory.mktemp("tfserving-logs")
    with EmbeddedRedis() as redis_server, Service(redis_server.url, COMMITTED_MODEL_DIR.parent, settings, log_dir=logs).running() as svc:
        yield svc


def url(served, suffix: str = "") -> str:
    return f"{served.url}/v1/models/sentiment{suffix}"


def tf_predict(served, body: dict | bytes, suffix: str = ":predict", **kwargs) -> requests.Response:
    """POST as TensorFlow Serving's REST clients do: a JSON body (``curl -d`` sends no JSON content type)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url(served, suffix), data=data, timeout=30, **kwargs)


def reference(saved_model, texts: list[str]) -> dict:
    import tensorflow as tf

    outputs = saved_model.signatures["predict_text"](texts=tf.constant(texts))
    return {name: tensor.numpy().tolist() for name, tensor in outputs.items()}


# --- status and metadata ---------------------------------------------------------------------


def test_model_status_lists_the_served_version(served, committed):
    expected = {
        "model_version_status": [
            {"version": str(committed.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert requests.get(url(served), timeout=5).json() == expected
    response = requests.get(url(served, f"/versions/{committed.version}"), timeout=5)
    assert response.status_code == 200 and response.json() == expected


def test_versions_that_are_not_served_are_404(served, committed):
    on_disk = [
        int(p.name) for p in COMMITTED_MODEL_DIR.iterdir() if p.name.isdigit() and is_complete(p) and int(p.name) != committed.version
    ]
    for version in on_disk:
        message = assert_standard_error(requests.get(url(served, f"/versions/{version}"), timeout=5), 404)
        assert message.startswith(f"Could not find version {version} of model sentiment") and "in the model store" in message
        assert_standard_error(requests.get(url(served, f"/versions/{version}/metadata"), timeout=5), 404, f"Specific(sentiment, {version})")
        body = {"signature_name": "predict_text", "instances": ["fine"]}
        assert_standard_error(tf_predict(served, body, f"/versions/{version}:predict"), 404, f"Specific(sentiment, {version})")
    message = assert_standard_error(
        requests.get(url(served, "/versions/999"), timeout=5), 404, "Could not find version 999 of model sentiment"
    )
    assert "model store" not in message


def test_unknown_model_is_404_as_tensorflow_serving_says_it(served):
    assert_standard_error(requests.get(f"{served.url}/v1/models/nope", timeout=5), 404, "Could not find any versions of model nope")
    assert_standard_error(
        requests.get(f"{served.url}/v1/models/nope/metadata", timeout=5), 404, "Servable not found for request: Latest(nope)"
    )
    response = requests.post(f"{served.url}/v1/models/nope:predict", json={"signature_name": "predict_text", "instances": ["a"]}, timeout=5)
    assert_standard_error(response, 404, "Servable not found for request: Latest(nope)")


def tensor_info(spec) -> dict:
    """A `tf.TensorSpec` of the loaded SavedModel as TensorFlow Serving's TensorInfo JSON (dtype and shape; the name is the graph's)."""
    from tensorflow.core.framework import types_pb2

    dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
    return {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum), "tensor_shape": {"dim": dims, "unknown_rank": False}}


def test_metadata_describes_the_saved_model_signatures(served, committed, saved_model):
    for suffix in ("/metadata", f"/versions/{committed.version}/metadata"):
        response = requests.get(url(served, suffix), timeout=5)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_spec"] == {"name": "sentiment", "version": str(committed.version), "signature_name": ""}
        described = body["metadata"]["signature_def"]["signature_def"]
        assert set(described) == {*saved_model.signatures, "__saved_model_init_op"}
        for name, function in saved_model.signatures.items():
            _, inputs = function.structured_input_signature
            entry = described[name]
            assert entry["method_name"] == "tensorflow/serving/predict" and entry["defaults"] == {}
            assert {k: {f: v[f] for f in ("dtype", "tensor_shape")} for k, v in entry["inputs"].items()} == {
                k: tensor_info(spec) for k, spec in inputs.items()
            }
            assert {k: {f: v[f] for f in ("dtype", "tensor_shape")} for k, v in entry["outputs"].items()} == {
                k: tensor_info(spec) for k, spec in function.structured_outputs.items()
            }
            assert all(
                info["name"].endswith(tuple(f":{i}" for i in range(8))) for info in [*entry["inputs"].values(), *entry["outputs"].values()]
            )
        assert described["predict_text"]["inputs"]["texts"]["dtype"] == "DT_STRING"


# --- predict ------------------------------------------------------------------------------------


def test_row_form_answers_what_the_saved_model_computes(served, saved_model):
    texts = TEXTS[:MAX_TEXTS]
    response = tf_predict(served, {"signature_name": "predict_text", "instances": texts})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    predictions = response.json()["predictions"]
    expected = reference(saved_model, texts)
    assert len(predictions) == len(texts)
    for i, row in enumerate(predictions):
        assert set(row) == {"probability", "token_ids", "n_tokens", "windows"}
        assert row["probability"] == pytest.approx(expected["probability"][i], abs=1e-5), texts[i]
        assert row["n_tokens"] == expected["n_tokens"][i] and row["windows"] == expected["windows"][i]
        assert row["token_ids"] == expected["token_ids"][i]  # padded with 0 to the longest text, as the signature pads


def test_columnar_and_named_forms_give_the_same_answer(served, saved_model):
    texts = [TEXTS[0], TEXTS[8], TEXTS[5]]
    expected = reference(saved_model, texts)
    encoded = [{"b64": base64.b64encode(t.encode()).decode()} for t in texts]
    bodies = [
        {"signature_name": "predict_text", "inputs": texts},
        {"signature_name": "predict_text", "inputs": {"texts": texts}},
        {"signature_name": "predict_text", "inputs": {"texts": encoded, "ignored": [1]}},
    ]
    for body in bodies:
        response = tf_predict(served, body)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert set(outputs) == {"probability", "token_ids", "n_tokens", "windows"}
        assert outputs["probability"] == pytest.approx(expected["probability"], abs=1e-5)
        assert outputs["n_tokens"] == expected["n_tokens"] and outputs["token_ids"] == expected["token_ids"]
        assert outputs["windows"] == expected["windows"]
    for instances in ([{"texts": t} for t in texts], encoded, [{"texts": e} for e in encoded]):
        response = tf_predict(
            served, {"signature_name": "predict_text", "instances": instances}, f"/versions/{resolve(COMMITTED_MODEL_DIR).version}:predict"
        )
        assert response.status_code == 200, response.text
        assert [p["probability"] for p in response.json()["predictions"]] == pytest.approx(expected["probability"], abs=1e-5)


def test_probabilities_are_printed_as_tensorflow_serving_prints_a_float32():
    rng = random.Random(3)
    for _ in range(2000):
        value = struct.unpack("<f", struct.pack("<f", rng.random() ** rng.choice([1, 4, 16])))[0]
        printed = float32_json(value)
        assert struct.unpack("<f", struct.pack("<f", printed))[0] == value  # the same float32
        assert printed in (float(f"{value:.6g}"), float(f"{value:.9g}"))  # in 6 digits when they suffice, else 9 (not 17)
    assert float32_json(struct.unpack("<f", struct.pack("<f", 0.2))[0]) == 0.2


def test_signatures_other_than_predict_text_are_refused(served):
    message = assert_standard_error(tf_predict(served, {"instances": ["fine"]}), 400, '"serving_default"', '"predict_text"')
    assert "token ids" in message
    assert_standard_error(tf_predict(served, {"signature_name": "serving_default", "instances": [[4, 5, 6]]}), 400, "predict_text")
    assert_standard_error(tf_predict(served, {"signature_name": "serving_gpu", "inputs": {"token_ids": [[4]]}}), 400, "predict_text")
    assert_standard_error(
        tf_predict(served, {"signature_name": "nope", "instances": ["a"]}), 400, 'Serving signature name: "nope" not found in signature def'
    )


TEXT = {"signature_name": "predict_text"}
BAD_BODIES = [
    (b"", 400),
    (b"{", 400),
    (b"[1, 2]", 400),
    (b'{"signature_name": "predict_text", "instances": ["bad utf-8 \xff"]}', 400),
    (json.dumps({**TEXT}).encode(), 400),
    (json.dumps({**TEXT, "instances": ["a"], "inputs": ["b"]}).encode(), 400),
    (json.dumps({**TEXT, "instances": []}).encode(), 400),
    (json.dumps({**TEXT, "instances": "not a list"}).encode(), 400),
    (json.dumps({**TEXT, "instances": [5]}).encode(), 400),
    (json.dumps({**TEXT, "instances": [["nested"]]}).encode(), 400),
    (json.dumps({**TEXT, "instances": ["a", {"texts": "b"}]}).encode(), 400),
    (json.dumps({**TEXT, "instances": [{"texts": "a", "other": 1}]}).encode(), 400),
    (json.dumps({**TEXT, "instances": [{"b64": "not base64!"}]}).encode(), 400),
    (json.dumps({**TEXT, "instances": [{"b64": base64.b64encode(b"\xff\xfe").decode()}]}).encode(), 400),
    (json.dumps({**TEXT, "instances": [""]}).encode(), 400),
    (json.dumps({**TEXT, "instances": ["   \t"]}).encode(), 400),
    (json.dumps({**TEXT, "instances": ["nul \x00 inside"]}).encode(), 400),
    (json.dumps({**TEXT, "inputs": "one string"}).encode(), 400),
    (json.dumps({**TEXT, "inputs": {"other": ["a"]}}).encode(), 400),
    (json.dumps({**TEXT, "inputs": []}).encode(), 400),
    (json.dumps({"signature_name": 5, "instances": ["a"]}).encode(), 400),
    (json.dumps({**TEXT, "instances": ["a"] * (MAX_TEXTS + 1)}).encode(), 413),
    (json.dumps({**TEXT, "inputs": ["a" * 5001]}).encode(), 413),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES, ids=[f"{b[:40]!r}-{s}" for b, s in BAD_BODIES])
def test_bad_requests_get_a_tensorflow_serving_error(served, body, status):
    assert_standard_error(tf_predict(served, body), status)


# --- the same inference path as /predict ------------------------------------------------------


def test_the_same_queue_and_deadline_as_predict(served):
    """A frozen worker: the request waits in Redis, not in a model of its own, and gets the deadline's 504."""
    body = {"signature_name": "predict_text", "instances": ["great"]}
    with frozen(served.workers[0]):
        started = time.monotonic()
        response = tf_predict(served, body, headers={"X-Deadline-Ms": "300"})
        elapsed = time.monotonic() - started
    assert_standard_error(response, 504, "deadline")
    assert 0.29 <= elapsed < 1.5
    assert_standard_error(tf_predict(served, body, headers={"X-Deadline-Ms": "soon"}), 400, "X-Deadline-Ms")
    assert tf_predict(served, body).status_code == 200
    assert timed_predict(served, {"text": "great"})[0].status_code == 200
    metrics = requests.get(f"{served.url}/metrics", timeout=5).text
    assert 'sentiment_http_requests_total{route="/v1/models/<name>:predict",status="504"}' in metrics
    assert 'sentiment_requests_refused_total{model="sentiment",reason="deadline_exceeded",version="3"}' in metrics
