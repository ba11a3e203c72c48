"""KServe's Open Inference Protocol v2, driven by Triton's own HTTP client (``tritonclient[http]``) and by raw HTTP for what it refuses."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import assert_standard_error, frozen, wait_until

pytestmark = pytest.mark.slow  # A live service of its own: end to end.

TEXTS = [
    "the movie was great wonderful superb, i loved it",
    "awful boring terrible waste",
    "Ce film est magnifique ✓ 映画",
    "a plot, then a dull mess!",
]


@pytest.fixture(scope="module")
def client(service):
    triton = httpclient.InferenceServerClient(url=service.url.removeprefix("http://"), network_timeout=30)
    yield triton
    triton.close()


def texts_input(texts: list[str], binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("texts", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=binary)
    return tensor


def native_scores(service, texts: list[str]) -> list[dict]:
    response = service.predict({"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def infer_raw(service, body: dict | bytes, headers: dict | None = None, path: str = "/v2/models/sentiment/infer") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{service.url}{path}", data=data, headers=headers, timeout=30)


def bytes_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# --- health and metadata --------------------------------------------------------------------------


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sentiment") and client.is_model_ready("sentiment", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("sentiment", "2")
    assert client.get_server_metadata() == {"name": "sentiment-service", "version": "0.2.0", "extensions": ["binary_tensor_data"]}
    expected = {
        "name": "sentiment",
        "versions": ["1"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "texts", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "explanation", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert client.get_model_metadata("sentiment") == expected
    assert client.get_model_metadata("sentiment", "1") == expected
    for name, version in (("nope", ""), ("sentiment", "2")):
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata(name, version)
        assert caught.value.status() == "404" and "unknown model" in caught.value.message()


def test_readiness_follows_readyz(service, client):
    """No heartbeat from the (frozen) worker: /readyz, /v2/health/ready and the model's ready all say not ready, then ready again."""
    with frozen(service.workers[0]):
        wait_until(lambda: requests.get(f"{service.url}/readyz", timeout=5).status_code == 503, 15, what="/readyz to say not ready")
        assert not client.is_server_ready() and not client.is_model_ready("sentiment")
        response = requests.get(f"{service.url}/v2/health/ready", timeout=5)
        assert response.status_code == 503 and response.json() == {"ready": False}
        assert client.is_server_live()
    wait_until(client.is_server_ready, 15, what="/v2/health/ready to say ready again")
    assert requests.get(f"{service.url}/v2/models/sentiment/ready", timeout=5).json() == {"name": "sentiment", "ready": True}


# --- inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
def test_infer_answers_what_predict_answers(service, client, binary_in, binary_out):
    expected = native_scores(service, TEXTS)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("probability", "label")]
    result = client.infer("sentiment", [texts_input(TEXTS, binary_in)], outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "sentiment" and response["model_version"] == "1" and response["id"] == "req-7"
    probability, label = result.as_numpy("probability"), result.as_numpy("label")
    assert probability.dtype == np.float32 and probability.shape == (len(TEXTS),)
    assert probability.tolist() == pytest.approx([p["score"] for p in expected], abs=1e-6)  # /predict rounds to 6 decimals
    labels = [v.decode() if isinstance(v, bytes) else v for v in label.tolist()]
    assert labels == [p["label"] for p in expected]
    assert all(("parameters" in o) == binary_out for o in response["outputs"])


def test_default_outputs_are_all_binary_from_tritonclient(client):
    """Without `outputs`, tritonclient asks for every output as binary data (binary_data_output)."""
    result = client.infer("sentiment", [texts_input(TEXTS[:2], True)], model_version="1")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probability", "label"]
    assert all(o["parameters"]["binary_data_size"] > 0 for o in result.get_response()["outputs"])
    assert result.as_numpy("label").tolist() == [b"positive", b"negative"]


def test_only_the_outputs_asked_for(client):
    result = client.infer(
        "sentiment", [texts_input(TEXTS[:1], False)], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"] and result.as_numpy("probability") is None


@pytest.mark.parametrize("binary_out", [False, True])
def test_explanation_only_when_named_and_as_predict_gives_it(service, client, binary_out):
    """The `explanation` output: each element the JSON /predict answers with "explain": true, for the same text."""
    response = service.predict({"texts": TEXTS, "explain": True})
    assert response.status_code == 200, response.text
    expected = [p["explanation"] for p in response.json()["predictions"]]
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("explanation", "probability")]
    result = client.infer("sentiment", [texts_input(TEXTS, True)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["explanation", "probability"]
    explanations = [json.loads(v) for v in result.as_numpy("explanation").tolist()]
    assert [e["method"] for e in explanations] == [e["method"] for e in expected] == ["gradient_x_input"] * len(TEXTS)
    for got, want in zip(explanations, expected, strict=True):
        assert got["logit"] == pytest.approx(want["logit"], abs=1e-5)
        assert [(t["token"], t["start"], t["end"], t["read"]) for t in got["tokens"]] == [
            (t["token"], t["start"], t["end"], t["read"]) for t in want["tokens"]
        ]
        assert [t["weight"] for t in got["tokens"]] == pytest.approx([t["weight"] for t in want["tokens"]], abs=1e-5)
    assert any(t["weight"] for e in explanations for t in e["tokens"])  # weights, not zeros
    plain = client.infer("sentiment", [texts_input(TEXTS[:1], True)])  # no outputs named: no explanation
    assert [o["name"] for o in plain.get_response()["outputs"]] == ["probability", "label"]


def test_nested_json_data_and_the_binary_body_by_hand(service):
    nested = {"inputs": [{"name": "texts", "shape": [2], "datatype": "BYTES", "data": [[TEXTS[0]], [TEXTS[1]]]}]}
    response = infer_raw(service, nested)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json", response.text
    assert response.json()["outputs"][1]["data"] == ["positive", "negative"]

    blob = bytes_elements(TEXTS[0].encode(), TEXTS[2].encode())
    header = json.dumps(
        {
            "inputs": [{"name": "texts", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}],
            "outputs": [{"name": "probability", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = infer_raw(
        service, header + blob, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/octet-stream"
    json_length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.content[:json_length])
    [output] = answer["outputs"]
    assert output == {"name": "probability", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}
    scores = struct.unpack("<2f", response.content[json_length:])
    assert list(scores) == pytest.approx([p["score"] for p in native_scores(service, [TEXTS[0], TEXTS[2]])], abs=1e-6)


# --- bad requests: a clear 4xx, never a 500 ----------------------------------------------------------


def one_input(**changes) -> dict:
    return {"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["fine film"], **changes}]}


BAD_REQUESTS = [
    ("malformed JSON", b'{"inputs": [', None, 400, "malformed JSON"),
    ("not an object", b"[]", None, 400, "JSON object"),
    ("no inputs", b"{}", None, 400, "inputs"),
    ("wrong datatype", one_input(datatype="FP32", data=[1.5]), None, 400, "BYTES"),
    ("shape mismatch", one_input(shape=[3]), None, 400, "shape [3] but 1 elements"),
    ("rank 2", one_input(shape=[1, 1]), None, 400, "must be [n]"),
    ("negative shape", one_input(shape=[-1]), None, 400, "must be [n]"),
    ("unknown input", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, None, 400, "'texts'"),
    ("two inputs", {"inputs": one_input()["inputs"] * 2}, None, 400, "one input"),
    ("unknown output", {**one_input(), "outputs": [{"name": "logits"}]}, None, 400, "unexpected inference output 'logits'"),
    ("output twice", {**one_input(), "outputs": [{"name": "label"}, {"name": "label"}]}, None, 400, "twice"),
    ("binary_data not a bool", {**one_input(), "parameters": {"binary_data_output": "yes"}}, None, 400, "binary_data_output"),
    ("unknown field", {**one_input(), "priority": 1}, None, 400, "priority"),
    ("id not a string", {**one_input(), "id": 42}, None, 400, "id"),
    ("no data", {"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES"}]}, None, 400, "neither data"),
    ("number element", one_input(data=[5]), None, 400, "texts[0] must be a string"),
    ("empty", one_input(shape=[0], data=[]), None, 400, "at least one text"),
    ("blank text", one_input(data=["  "]), None, 400, "texts[0] is empty"),
    ("NUL", one_input(data=["a\x00b"]), None, 400, "NUL"),
    ("too many texts", one_input(shape=[9], data=["x"] * 9), None, 413, "limit is 8"),
    ("too long", one_input(data=["a" * 5001]), None, 413, "5001 characters"),
    ("body over the limit", one_input(data=["a " * 40_000]), None, 413, "exceeds"),
    ("invalid UTF-8 in JSON", b'{"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["\xff"]}]}', None, 400, "JSON"),
    ("compressed", one_input(), {"Content-Encoding": "gzip"}, 415, "gzip"),
    ("header length not a number", one_input(), {"Inference-Header-Content-Length": "ten"}, 400, "Inference-Header-Content-Length"),
    ("header length past the body", one_input(), {"Inference-Header-Content-Length": "999999"}, 400, "Inference-Header-Content-Length"),
]


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_json_requests(service, body, headers, status, fragment):
    assert_standard_error(infer_raw(service, body, headers), status, fragment)


def binary_request(blob: bytes, size: int | None = None, count: int = 1) -> tuple[bytes, dict]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "texts",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob) if size is None else size},
                }
            ]
        }
    ).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


BAD_BINARY = [
    ("invalid UTF-8", bytes_elements(b"ok", b"caf\xe9"), None, 2, "texts[1] is not valid UTF-8"),
    ("cut inside a length", bytes_elements(b"ok") + b"\x05\x00", None, 1, "4-byte length"),
    ("cut inside an element", struct.pack("<I", 10) + b"short", None, 1, "element of 10 bytes"),
    ("fewer elements than the shape", bytes_elements(b"one"), None, 2, "shape [2] but 1 elements"),
    ("size larger than the body", bytes_elements(b"one"), 100, 1, "binary_data_size 100"),
    ("bytes nobody declared", bytes_elements(b"one", b"two"), 7, 1, "declares 7"),
]


@pytest.mark.parametrize(("blob", "size", "count", "fragment"), [b[1:] for b in BAD_BINARY], ids=[b[0] for b in BAD_BINARY])
def test_bad_binary_requests(service, blob, size, count, fragment):
    body, headers = binary_request(blob, size, count)
    assert_standard_error(infer_raw(service, body, headers), 400, fragment)


def test_binary_bytes_after_a_json_input_are_refused(service):
    header = json.dumps(one_input()).encode()
    assert_standard_error(
        infer_raw(service, header + b"junk", {"Inference-Header-Content-Length": str(len(header))}), 400, "no input declares"
    )


def test_tritonclient_sees_the_errors(client):
    with pytest.raises(InferenceServerException) as caught:
        client.infer("sentiment", [texts_input(["fine", ""], True)])
    assert caught.value.status() == "400" and "texts[1] is empty" in caught.value.message()
    wrong = httpclient.InferInput("texts", [2], "FP32")
    wrong.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("sentiment", [wrong])
    assert caught.value.status() == "400" and "BYTES" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [texts_input(["fine"], False)])
    assert caught.value.status() == "404"


# --- the same inference path as /predict ------------------------------------------------------------


def test_the_same_queue_and_deadline_as_predict(service, client):
    with frozen(service.workers[0]):
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            client.infer("sentiment", [texts_input(["great"], True)], headers={"X-Deadline-Ms": "300"})
        elapsed = time.monotonic() - started
    assert caught.value.status() == "504" and "deadline" in caught.value.message()
    assert 0.29 <= elapsed < 1.5
    assert client.infer("sentiment", [texts_input(["great"], True)]).as_numpy("label").tolist() == [b"positive"]
    metrics = requests.get(f"{service.url}/metrics", timeout=5).text
    assert 'sentiment_http_requests_total{route="/v2/models/<name>/infer",status="504"}' in metrics
