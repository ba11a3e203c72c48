"""KServe's Open Inference Protocol v2 (``/v2/...``), with Triton's binary tensor data extension.

The model takes one input, ``texts`` (``BYTES``, shape ``[n]``: UTF-8 text),
and gives two outputs, ``probability`` (``FP32``, ``[n]``) and ``label``
(``BYTES``, ``[n]``). Tensors come as JSON (``data``, flat or nested) or as
binary data after the JSON header (``Inference-Header-Content-Length``; a BYTES
element is a 4-byte little-endian length then its bytes), which is what
``tritonclient``'s ``InferInput.set_data_from_numpy`` sends by default.
Outputs come back as binary data when asked (``"binary_data": true`` on an
output, or ``"binary_data_output": true`` on the request).

A third output, ``explanation`` (``BYTES``, ``[n]``), is listed in the
metadata of versions that can explain their scores and is returned only when
named in ``outputs``, not among "every output" of a request that names none: it
runs the model's backward pass, about twice a prediction's cost. Each element
is the JSON of what ``/predict`` answers with ``"explain": true`` (method,
logit, and each word with its character offsets and signed weight).

The texts go through the one inference path of `service.inference` (limits,
queue, worker, deadline). Errors are ``{"error": "..."}``: 400 for a bad
request, 404 for an unknown model or version, 413 over a limit, 415 for a
compressed body (not supported), 503 (with ``Retry-After``) and 504 from the
queue as on ``/predict``. Readiness (``/v2/health/ready``, the model's
``/ready``) is `service.health.readiness`, what ``/readyz`` says, 503 when
not ready.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import orjson
from flask import Blueprint, Response, request
from pydantic import ValidationError
from werkzeug.exceptions import NotFound

from service import __version__
from service.errors import BadRequest, UnsupportedMediaType
from service.health import readiness
from service.hooks import deadline_seconds, inference_route
from service.inference import Inference, inference
from service.openapi import Body, documented
from service.protocols.common import answer_errors_as_standard, parse_json, validation_problems
from service.responses import json_response
from service.schemas import (
    InferenceRequest,
    InferenceResponse,
    KServeError,
    KServeModelMetadataResponse,
    ModelReadyResponse,
    RequestInput,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)

bp = Blueprint("kserve", __name__)
answer_errors_as_standard(bp)

SERVER_NAME = "sentiment-service"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"
HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT = "texts"
OUTPUTS = {"probability": "FP32", "label": "BYTES"}  # every output of a request that names none
EXPLANATION = "explanation"  # BYTES, JSON per text: returned only when named (a backward pass: ~2x the cost)
BINARY = "application/octet-stream"
PARAMETERS = {"name": "The model's name (SENTIMENT_MODEL_NAME).", "version": "The served version; others get 404."}
NOT_FOUND = "Unknown model or version."

_length = struct.Struct("<I")


def _check_model(path: Inference, name: str, version: str | None) -> None:
    if name != path.model.name:
        raise NotFound(f"Request for unknown model: '{name}' is not found")
    if version is not None and version != str(path.model.version):
        served = path.model.version
        raise NotFound(f"Request for unknown model: '{name}' version {version} is not found (this server serves version {served})")


@bp.get("/v2")
@documented(
    "Server metadata (Open Inference Protocol)",
    tag="kserve-v2",
    responses={200: ("Name, version, extensions.", ServerMetadataResponse)},
    errors=KServeError,
)
def server_metadata() -> Response:
    return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


@bp.get("/v2/health/live")
@documented(
    "Server liveness (Open Inference Protocol)", tag="kserve-v2", responses={200: ("Alive.", ServerLiveResponse)}, errors=KServeError
)
def server_live() -> Response:
    return json_response({"live": True})


@bp.get("/v2/health/ready")
@documented(
    "Server readiness (Open Inference Protocol)",
    tag="kserve-v2",
    description="What `GET /readyz` says: vocabulary loaded, Redis answers, a live worker serves this model version.",
    responses={200: ("Ready.", ServerReadyResponse), 503: ("Not ready.", ServerReadyResponse)},
    errors=KServeError,
)
def server_ready() -> Response:
    _, reasons = readiness()
    return json_response({"ready": not reasons}, 503 if reasons else 200)


_READY_DOC = {
    "tag": "kserve-v2",
    "responses": {200: ("Ready.", ModelReadyResponse), 404: NOT_FOUND, 503: ("Not ready (see `GET /readyz`).", ModelReadyResponse)},
    "errors": KServeError,
    "parameters": PARAMETERS,
}


@bp.get("/v2/models/<name>/ready")
@documented("Model readiness (Open Inference Protocol)", **_READY_DOC)
def model_ready(name: str) -> Response:
    return _ready(name, None)


@bp.get("/v2/models/<name>/versions/<version>/ready")
@documented("Model version readiness (Open Inference Protocol)", **_READY_DOC)
def model_version_ready(name: str, version: str) -> Response:
    return _ready(name, version)


def _ready(name: str, version: str | None) -> Response:
    _check_model(inference(), name, version)
    _, reasons = readiness()
    return json_response({"name": name, "ready": not reasons}, 503 if reasons else 200)


_METADATA_DOC = {
    "tag": "kserve-v2",
    "responses": {200: ("Inputs and outputs of the model.", KServeModelMetadataResponse), 404: NOT_FOUND},
    "errors": KServeError,
    "parameters": PARAMETERS,
}


@bp.get("/v2/models/<name>")
@documented("Model metadata (Open Inference Protocol)", **_METADATA_DOC)
def model_metadata(name: str) -> Response:
    return _metadata(name, None)


@bp.get("/v2/models/<name>/versions/<version>")
@documented("Model version metadata (Open Inference Protocol)", **_METADATA_DOC)
def model_version_metadata(name: str, version: str) -> Response:
    return _metadata(name, version)


def _metadata(name: str, version: str | None) -> Response:
    path = inference()
    _check_model(path, name, version)
    return json_response(
        {
            "name": path.model.name,
            "versions": [str(path.model.version)],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": output, "datatype": datatype, "shape": [-1]} for output, datatype in _outputs(path).items()],
        }
    )


_INFER_DOC = {
    "tag": "kserve-v2",
    "description": "JSON, or JSON followed by binary tensor data (`Inference-Header-Content-Length` gives the JSON's length). "
    "Any content type is accepted; the answer is application/json, or application/octet-stream when an output is binary.",
    "request": [
        Body(
            InferenceRequest,
            examples={
                "JSON tensors": {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "texts",
                            "shape": [2],
                            "datatype": "BYTES",
                            "data": ["A moving, beautifully acted film.", "Dull, predictable and far too long."],
                        }
                    ],
                    "outputs": [{"name": "probability"}, {"name": "label"}],
                }
            },
        ),
        Body(media_type=BINARY, schema={"type": "string", "description": "The JSON request, then the binary tensors."}),
    ],
    "responses": {
        200: (
            "The outputs asked for.",
            [
                Body(InferenceResponse),
                Body(media_type=BINARY, schema={"type": "string", "description": "The JSON response, then the binary tensors."}),
            ],
        ),
        400: "Malformed JSON or binary data, an unknown input or output, a datatype other than BYTES, a shape that does "
        "not match the data, invalid UTF-8, an empty or blank text, a NUL.",
        404: NOT_FOUND,
        413: "Body over the limit, too many texts, or a text too long.",
        415: "A compressed body (Content-Encoding).",
    },
    "errors": KServeError,
    "deadline": True,
    "parameters": PARAMETERS,
}


@bp.post("/v2/models/<name>/infer")
@documented("Inference (Open Inference Protocol)", **_INFER_DOC)
@inference_route
def infer(name: str) -> Response:
    return _infer(name, None)


@bp.post("/v2/models/<name>/versions/<version>/infer")
@documented("Inference with a model version (Open Inference Protocol)", **_INFER_DOC)
@inference_route
def infer_version(name: str, version: str) -> Response:
    return _infer(name, version)


def _infer(name: str, version: str | None) -> Response:
    path = inference()
    _check_model(path, name, version)
    if request.content_encoding not in (None, "", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {request.content_encoding} is not supported: send the request uncompressed")
    parsed, binary = _parse_request(request.get_data(cache=False))
    texts = path.check_texts(_input_texts(parsed.inputs, binary), INPUT)
    datatypes = _outputs(path)
    outputs = _requested_outputs(parsed, datatypes)
    explain = any(name == EXPLANATION for name, _ in outputs)
    predictions = path.predict(texts, deadline_seconds(path.settings.default_deadline_ms), explain=explain)
    values = {"probability": [p.score for p in predictions], "label": [p.label for p in predictions]}
    if explain:
        values[EXPLANATION] = [orjson.dumps(p.explanation).decode() for p in predictions]
    tensors, blobs = [], []
    for output, as_binary in outputs:
        tensor = {"name": output, "datatype": datatypes[output], "shape": [len(predictions)]}
        if as_binary:
            blob = _fp32(values[output]) if datatypes[output] == "FP32" else _bytes_tensor(values[output])
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values[output]
        tensors.append(tensor)
    body = {"model_name": path.model.name, "model_version": str(path.model.version), "outputs": tensors}
    if parsed.id is not None:
        body["id"] = parsed.id
    response = json_response(body)
    if blobs:
        header = response.get_data()
        response.set_data(header + b"".join(blobs))
        response.mimetype = BINARY
        response.headers[HEADER_LENGTH] = str(len(header))
    return response


def _parse_request(body: bytes) -> tuple[InferenceRequest, memoryview]:
    """The JSON header, validated, and the binary part of the body that follows it (empty without the extension)."""
    binary = memoryview(b"")
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} must be the length in bytes of the JSON header, at most the body's {len(body)} bytes")
        binary = memoryview(body)[int(header_length) :]
        body = body[: int(header_length)]
    payload = parse_json(body, "the inference request")
    if not isinstance(payload, dict):
        raise BadRequest("the inference request must be a JSON object")
    try:
        return InferenceRequest.model_validate(payload), binary
    except ValidationError as exc:
        raise BadRequest(validation_problems(exc)) from None


def _input_texts(inputs: list[RequestInput], binary: memoryview) -> list:
    if len(inputs) != 1 or inputs[0].name != INPUT:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise BadRequest(f"unexpected inference inputs {names}: the model takes one input, '{INPUT}' (BYTES, shape [n])")
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input '{INPUT}' has datatype {tensor.datatype}; it must be BYTES (UTF-8 text)")
    if len(tensor.shape) != 1 or tensor.shape[0] < 0:
        raise BadRequest(f"input '{INPUT}' has shape {tensor.shape}; it must be [n], n texts")
    count = tensor.shape[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise BadRequest(f"input '{INPUT}' has both binary_data_size and data: send one")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary):
            raise BadRequest(f"input '{INPUT}' has binary_data_size {size!r}; the body holds {len(binary)} bytes of binary data")
        if size != len(binary):
            raise BadRequest(f"the body holds {len(binary)} bytes of binary data; input '{INPUT}' declares {size}")
        elements = list(_bytes_elements(binary))
    else:
        if tensor.data is None:
            raise BadRequest(f"input '{INPUT}' has neither data nor binary_data_size")
        if len(binary):
            raise BadRequest(f"the body holds {len(binary)} bytes of binary data that no input declares (binary_data_size)")
        elements = tensor.data.flat()
    if len(elements) != count:
        raise BadRequest(f"input '{INPUT}' has shape [{count}] but {len(elements)} elements")
    return [_text(element, index) for index, element in enumerate(elements)]


def _bytes_elements(blob: memoryview) -> Iterator[bytes]:
    """BYTES elements of the binary extension: each a 4-byte little-endian length, then that many bytes."""
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise BadRequest(f"binary data of input '{INPUT}' ends inside an element's 4-byte length, at byte {offset}")
        (length,) = _length.unpack_from(blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise BadRequest(f"binary data of input '{INPUT}' ends inside an element of {length} bytes, at byte {offset}")
        yield bytes(blob[offset : offset + length])
        offset += length


def _text(element: object, index: int) -> object:
    """A BYTES element as text: JSON strings as they are, binary elements decoded as UTF-8; anything else is left to `check_texts`."""
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{INPUT}[{index}] is not valid UTF-8 (byte {exc.start})") from None
    return element


def _outputs(path: Inference) -> dict[str, str]:
    """The served version's outputs and their datatypes: ``explanation`` too when it can explain its scores."""
    return {**OUTPUTS, EXPLANATION: "BYTES"} if path.model.explains else OUTPUTS


def _requested_outputs(parsed: InferenceRequest, outputs: dict[str, str]) -> list[tuple[str, bool]]:
    """(name, as binary) of each output to return, in the order asked (`OUTPUTS` when none are named)."""
    default_binary = _flag(parsed.parameters, "binary_data_output", False)
    if not parsed.outputs:
        return [(name, default_binary) for name in OUTPUTS]
    chosen = []
    for output in parsed.outputs:
        if output.name == EXPLANATION and EXPLANATION not in outputs:
            raise BadRequest(f"output '{EXPLANATION}' is not available: this model version was exported before explanations")
        if output.name not in outputs:
            raise BadRequest(f"unexpected inference output '{output.name}': the model's outputs are {', '.join(outputs)}")
        if any(output.name == name for name, _ in chosen):
            raise BadRequest(f"output '{output.name}' is asked for twice")
        chosen.append((output.name, _flag(output.parameters, "binary_data", default_binary)))
    return chosen


def _flag(parameters: dict | None, name: str, default: bool) -> bool:
    value = (parameters or {}).get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f'parameter "{name}" must be true or false, not {value!r}')
    return value


def _fp32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(_length.pack(len(encoded)) + encoded for encoded in (v.encode("utf-8") for v in values))
