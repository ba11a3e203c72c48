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

The texts go through the scoring core, `service.scoring.Scorer` (limits,
queue, worker, deadline). Errors are ``{"error": "..."}``: 400 for a bad
request, 404 for an unknown model or version, 413 over a limit, 415 for a
compressed body (not supported), 503 (with ``Retry-After``) and 504 from the
queue as on ``/predict``. Readiness (``/v2/health/ready``, the model's
``/ready``) is `service.api.health.readiness`, what ``/readyz`` says, 503 when
not ready.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from service import __version__
from service.api.health import readiness
from service.api.hooks import inference_route
from service.api.openapi import Body, documented
from service.api.protocols.kserve_request import (
    CATEGORICAL_OUTPUTS,
    EXPLANATION,
    HEADER_LENGTH,
    INPUT,
    OUTPUTS,
    input_texts,
    parse_request,
    requested_outputs,
)
from service.api.responses import answer_errors_as_standard, json_response
from service.api.schemas.kserve import (
    InferenceRequest,
    InferenceResponse,
    KServeError,
    KServeModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from service.api.serving import route, router, score
from service.errors import NotFound as ServiceNotFound
from service.errors import UnsupportedMediaType
from service.packing import bytes_elements, pack
from service.scoring import Scorer

bp = Blueprint("kserve", __name__)
answer_errors_as_standard(bp)

SERVER_NAME = "sentiment-service"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"
BINARY = "application/octet-stream"
PARAMETERS = {"name": "A served model's name.", "version": "A version the model config serves; others get 404."}
NOT_FOUND = "Unknown model or version."


def _version(name: str, version: str | None) -> tuple[str, int]:
    """The model and version a URL names (none: the model's default), or the protocol's 404."""
    try:
        policy = router().policy(name)
    except ServiceNotFound:
        raise NotFound(f"Request for unknown model: '{name}' is not found") from None
    if version is None:
        return policy.name, policy.default
    if not version.isdigit() or int(version) not in policy.versions:
        served = ", ".join(map(str, policy.versions))
        raise NotFound(f"Request for unknown model: '{name}' version {version} is not found (this server serves {served})")
    return policy.name, int(version)


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


@bp.get("/v2/models/<name>/ready", defaults={"version": None})
@bp.get("/v2/models/<name>/versions/<version>/ready")
@documented(
    "Model readiness (Open Inference Protocol)",
    tag="kserve-v2",
    responses={200: ("Ready.", ModelReadyResponse), 404: NOT_FOUND, 503: ("Not ready (see `GET /readyz`).", ModelReadyResponse)},
    errors=KServeError,
    parameters=PARAMETERS,
)
def model_ready(name: str, version: str | None) -> Response:
    _version(name, version)
    _, reasons = readiness()
    return json_response({"name": name, "ready": not reasons}, 503 if reasons else 200)


@bp.get("/v2/models/<name>", defaults={"version": None})
@bp.get("/v2/models/<name>/versions/<version>")
@documented(
    "Model metadata (Open Inference Protocol)",
    tag="kserve-v2",
    responses={200: ("Inputs and outputs of the model.", KServeModelMetadataResponse), 404: NOT_FOUND},
    errors=KServeError,
    parameters=PARAMETERS,
)
def model_metadata(name: str, version: str | None) -> Response:
    model, served = _version(name, version)
    by = router().scorer(model, served)
    return json_response(
        {
            "name": model,
            "versions": [str(v) for v in router().policy(model).versions],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": output, "datatype": datatype, "shape": _shape(by, output, -1)} for output, datatype in _outputs(by).items()
            ],
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


@bp.post("/v2/models/<name>/infer", defaults={"version": None})
@bp.post("/v2/models/<name>/versions/<version>/infer")
@documented("Inference (Open Inference Protocol)", **_INFER_DOC)
@inference_route
def infer(name: str, version: str | None) -> Response:
    model, _ = _version(name, version)
    to = route(model, int(version) if version is not None else None)
    by = to.scorer
    if request.content_encoding not in (None, "", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {request.content_encoding} is not supported: send the request uncompressed")
    parsed, binary = parse_request(request.get_data(cache=False), request.headers.get(HEADER_LENGTH))
    texts = by.check_texts(input_texts(parsed.inputs, binary), INPUT)
    datatypes = _outputs(by)
    outputs = requested_outputs(parsed, datatypes)
    explain = any(name == EXPLANATION for name, _ in outputs)
    scored = score(to, texts, explain=explain)
    predictions = scored.predictions
    labels = by.model.labels
    values = {
        "probability": [p.score for p in predictions],
        "probabilities": [p.scores[label] for p in predictions for label in labels],  # row-major [n, k]
        "label": [p.label for p in predictions],
    }
    if explain:
        values[EXPLANATION] = [orjson.dumps(p.explanation).decode() for p in predictions]
    tensors, blobs = [], []
    for output, as_binary in outputs:
        tensor = {"name": output, "datatype": datatypes[output], "shape": _shape(by, output, len(predictions))}
        if as_binary:
            blob = pack(values[output], "f") if datatypes[output] == "FP32" else bytes_elements(values[output])
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values[output]
        tensors.append(tensor)
    body = {"model_name": scored.model.name, "model_version": str(scored.model.version), "outputs": tensors}
    if parsed.id is not None:
        body["id"] = parsed.id
    response = json_response(body)
    if blobs:
        header = response.get_data()
        response.set_data(header + b"".join(blobs))
        response.mimetype = BINARY
        response.headers[HEADER_LENGTH] = str(len(header))
    return response


def _outputs(by: Scorer) -> dict[str, str]:
    """The version's outputs and their datatypes (a k-label version's ``probabilities`` for a two-label one's
    ``probability``): ``explanation`` too when it can explain its scores."""
    outputs = CATEGORICAL_OUTPUTS if by.model.classes > 1 else OUTPUTS
    return {**outputs, EXPLANATION: "BYTES"} if by.model.explains else outputs


def _shape(by: Scorer, output: str, texts: int) -> list[int]:
    """An output's shape for ``texts`` texts (-1: any): ``[n]``, or ``[n, k]`` for a k-label version's probabilities."""
    return [texts, by.model.classes] if output == "probabilities" else [texts]
