"""TensorFlow Serving's REST API (``/v1/models/...``), answered as TensorFlow Serving 2.x answers it.

A client written for TensorFlow Serving against the SavedModel's
``predict_text`` signature works unchanged: the same URLs, the same JSON (row
form ``instances`` → ``predictions``, columnar form ``inputs`` → ``outputs``,
every output of the signature, floats printed as TensorFlow Serving prints a
float32), the same errors (``{"error": "..."}``, 400 for bad input, 404 for an
unknown model or version). The texts go through the one inference path of
`service.scoring.Scorer` (limits, queue, worker, deadline): nothing here runs the
model.

What differs from TensorFlow Serving, on purpose:

- Only ``predict_text`` (strings in) is served. ``serving_default`` and
  ``serving_gpu`` take token ids, which this service computes itself; asking
  for them (or for no signature, which means ``serving_default``) gets 400
  with a message naming ``predict_text``. An unknown signature gets
  TensorFlow Serving's own 400 ("not found in signature def").
- Only the served version is AVAILABLE. Other versions in the model store are
  not loaded, so, as in TensorFlow Serving for a version it does not manage,
  they get 404, with a note that they exist on disk. Version labels
  (``/labels/...``), ``:classify`` and ``:regress`` are not implemented.
- The service's limits apply: at most SENTIMENT_MAX_TEXTS_PER_REQUEST texts of
  SENTIMENT_MAX_TEXT_CHARS characters (413), no empty or blank text and no NUL
  (400), and the deadline (``X-Deadline-Ms``, 504). A full queue is 503 with
  ``Retry-After``.
- ``probability`` is the service's score: for a text longer than the model
  reads at once, served by a version that reads long texts in windows, it
  combines the windows' scores, where ``predict_text`` reads the head and tail
  only (``SENTIMENT_LONG_TEXT_POLICY=head_tail`` gives ``predict_text``'s
  reading). ``token_ids`` are always ``predict_text``'s.
- Signature descriptions (``/metadata``) come from ``metadata.json``'s
  ``signature_defs``, recorded at export (`training.signatures`): this process
  does not import TensorFlow.

Each view serves a route and its ``/versions/<version>`` twin (Flask's route
defaults give ``version=None`` to the first).
"""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from service.api.bodies import json_body, validated
from service.api.hooks import inference_route
from service.api.openapi import Body, documented
from service.api.responses import answer_errors_as_standard, json_response
from service.api.schemas.tfserving import (
    Base64Value,
    ModelMetadataResponse,
    ModelStatusResponse,
    NamedTextInputs,
    NamedTextInstance,
    TFPredictRequest,
    TFPredictResponse,
    TFServingError,
)
from service.api.serving import route, router, score
from service.errors import BadRequest
from service.errors import NotFound as ServiceNotFound
from service.model_config import ModelPolicy
from service.model_store import ModelVersion, is_complete
from service.packing import float32_json
from service.scoring import Prediction, Scorer
from service.tokenizer import PAD_ID

bp = Blueprint("tfserving", __name__)
answer_errors_as_standard(bp)

TEXT_SIGNATURE = "predict_text"  # strings [batch] → probability, token_ids, n_tokens (training/export.py)
TEXT_INPUT = "texts"
DEFAULT_SIGNATURE = "serving_default"
PARAMETERS = {
    "name": "A served model's name.",
    "version": "A version number: one the model config serves.",
    "label": "A label of the model config (e.g. stable, canary): the version it names.",
}
NOT_FOUND = "Unknown model, a version that is not served, or an unknown label."


def _resolve(name: str, version: int | None, label: str | None, kind: str) -> tuple[ModelPolicy, int]:
    """The model and the version a URL names (its label's; none: the default), or TensorFlow Serving's 404 for ``kind``
    (``status``, or a servable request: ``metadata`` and ``predict``)."""
    if ":" in name:  # TensorFlow Serving's URL pattern takes no ':' in a name
        raise BadRequest(f"Malformed request: {request.method} {request.path}")
    served = router()
    try:
        policy = served.policy(name)
    except ServiceNotFound:
        unknown = f"Could not find any versions of model {name}" if kind == "status" else f"Servable not found for request: Latest({name})"
        raise NotFound(unknown) from None
    if label is not None:
        if label not in policy.labels:
            raise NotFound(f"Unrecognized servable version label: {label}")
        return policy, policy.labels[label]
    if version is None or version in policy.versions:
        return policy, policy.default if version is None else version
    message = f"Servable not found for request: Specific({name}, {version})"
    if kind == "status":
        message = f"Could not find version {version} of model {name}"
    if is_complete(served.settings.model_store / name / str(version)):
        message += f" (version {version} is in the model store, but this server does not serve it)"
    raise NotFound(message)


_STATUS_RESPONSES = {200: ("The served version is AVAILABLE.", ModelStatusResponse), 400: "A malformed URL.", 404: NOT_FOUND}


@bp.get("/v1/models/<name>", defaults={"version": None, "label": None})
@bp.get("/v1/models/<name>/versions/<int:version>", defaults={"label": None})
@bp.get("/v1/models/<name>/labels/<label>", defaults={"version": None})
@documented(
    "Model status (TensorFlow Serving)",
    tag="tensorflow-serving",
    description="Every version of the model this server serves, loads or unloads, with its state; or the one a version or a label names.",
    responses=_STATUS_RESPONSES,
    errors=TFServingError,
    parameters=PARAMETERS,
)
def model_status(name: str, version: int | None, label: str | None) -> Response:
    policy, named = _resolve(name, version, label, "status")
    states = router().states(policy.name)
    if version is not None or label is not None:
        states = [s for s in states if s["version"] == named]
    listed = [{"version": str(s["version"]), "state": s["state"], "status": {"error_code": "OK", "error_message": ""}} for s in states]
    return json_response({"model_version_status": listed})


_METADATA_RESPONSES = {
    200: ("Every signature of the SavedModel, in TensorFlow Serving's JSON form.", ModelMetadataResponse),
    400: "A malformed URL.",
    404: NOT_FOUND + " Also for an export whose metadata.json has no signature_defs (see training/signatures.py).",
}


@bp.get("/v1/models/<name>/metadata", defaults={"version": None, "label": None})
@bp.get("/v1/models/<name>/versions/<int:version>/metadata", defaults={"label": None})
@bp.get("/v1/models/<name>/labels/<label>/metadata", defaults={"version": None})
@documented(
    "Model metadata: signatures (TensorFlow Serving)",
    tag="tensorflow-serving",
    responses=_METADATA_RESPONSES,
    errors=TFServingError,
    parameters=PARAMETERS,
)
def model_metadata(name: str, version: int | None, label: str | None) -> Response:
    policy, served = _resolve(name, version, label, "metadata")
    signatures = router().scorer(policy.name, served).model.metadata.get("signature_defs")
    if not signatures:
        raise NotFound(
            f"version {served} of model {name} has no signature_defs in its metadata.json (python -m training.signatures adds them)"
        )
    spec = {"name": policy.name, "version": str(served), "signature_name": ""}
    return json_response({"model_spec": spec, "metadata": {"signature_def": {"signature_def": signatures}}})


_PREDICT_DOC = {
    "tag": "tensorflow-serving",
    "description": 'Signature "predict_text" only. Any content type is read as JSON, as TensorFlow Serving does.',
    "request": Body(
        TFPredictRequest,
        examples={
            "row form": {
                "signature_name": "predict_text",
                "instances": ["A moving, beautifully acted film.", "Dull, predictable and far too long."],
            },
            "columnar form": {"signature_name": "predict_text", "inputs": {"texts": ["A moving, beautifully acted film."]}},
        },
    ),
    "responses": {
        200: (
            '"predictions" (one object per instance) for the row form, "outputs" (one list per output) for the columnar form.',
            TFPredictResponse,
        ),
        400: "Malformed JSON, a signature other than predict_text, a value that is not a text, an empty or blank text, a NUL.",
        404: NOT_FOUND,
        413: "Body over the limit, too many texts, or a text too long.",
    },
    "errors": TFServingError,
    "deadline": True,
    "parameters": PARAMETERS,
}


@bp.post("/v1/models/<name>:predict", defaults={"version": None, "label": None})
@bp.post("/v1/models/<name>/versions/<int:version>:predict", defaults={"label": None})
@bp.post("/v1/models/<name>/labels/<label>:predict", defaults={"version": None})
@documented("Predict (TensorFlow Serving)", **_PREDICT_DOC)
@inference_route
def predict(name: str, version: int | None, label: str | None) -> Response:
    policy, _ = _resolve(name, version, label, "predict")
    to = route(policy.name, version, label)
    by = to.scorer
    parsed = _parse_predict(by)
    row_form = parsed.instances is not None
    if row_form:
        texts = by.check_texts(_row_texts(parsed.instances), "instances")
    else:
        texts = by.check_texts(_columnar_texts(parsed.inputs), "inputs")
    predictions = score(to, texts).predictions
    outputs = _signature_outputs(by.model, predictions)
    if row_form:
        return json_response({"predictions": [dict(zip(outputs, row, strict=True)) for row in zip(*outputs.values(), strict=True)]})
    return json_response({"outputs": outputs})


def _signature_outputs(model: ModelVersion, predictions: list[Prediction]) -> dict[str, list]:
    """``predict_text``'s outputs, by name (TensorFlow Serving orders them so): a two-label version's ``probability``
    (of its second label); a k-label version's ``probabilities`` [n, k] in the order of its labels and ``label``."""
    outputs: dict[str, list] = {}
    if model.classes > 1:
        outputs["label"] = [p.label for p in predictions]
    outputs["n_tokens"] = [p.tokens for p in predictions]
    if model.classes > 1:
        outputs["probabilities"] = [[float32_json(p.scores[label]) for label in model.labels] for p in predictions]
    else:
        outputs["probability"] = [float32_json(p.score) for p in predictions]
    outputs["token_ids"] = _signature_token_ids(predictions)
    outputs["windows"] = [p.windows for p in predictions]
    return outputs


def _signature_token_ids(predictions: list[Prediction]) -> list[list[int]]:
    """The ``token_ids`` output of ``predict_text``: the ids each text was read as (its windows, in order),
    right-padded with 0 to the longest."""
    ids = [[token for window in p.encoded.windows for token in window] for p in predictions]
    width = max(len(row) for row in ids)
    return [row + [PAD_ID] * (width - len(row)) for row in ids]


def _parse_predict(by: Scorer) -> TFPredictRequest:
    """The request (any content type, read as JSON, as TensorFlow Serving reads any), validated; the signature is
    checked first, as TensorFlow Serving reads its inputs only then."""
    payload = json_body()
    signature_name = payload.get("signature_name") if isinstance(payload, dict) else None
    if signature_name is not None and not isinstance(signature_name, str):
        raise BadRequest("not formatted correctly: 'signature_name' key must be a string value")
    if isinstance(payload, dict):
        _check_signature(by, signature_name)
    parsed = validated(TFPredictRequest, payload, "JSON Value: the body is not an object")
    if (parsed.instances is None) == (parsed.inputs is None):
        if parsed.instances is None:
            raise BadRequest("Missing 'inputs' or 'instances' key")
        raise BadRequest("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    return parsed


def _check_signature(by: Scorer, signature_name: str | None) -> None:
    """Only the text signature is served; TensorFlow Serving's 400 for one the SavedModel does not have."""
    name = signature_name or DEFAULT_SIGNATURE
    if name == TEXT_SIGNATURE:
        return
    known = by.model.metadata.get("signature_defs") or {}
    if name in known or name in by.model.metadata.get("serving", {}).get("signatures", {}).values():
        raise BadRequest(
            f'signature "{name}" takes token ids, which this server computes itself: send "signature_name": "{TEXT_SIGNATURE}" '
            f'with texts (a request without "signature_name" means "{DEFAULT_SIGNATURE}")'
        )
    raise BadRequest(f'Serving signature name: "{name}" not found in signature def')


def _row_texts(instances: list) -> list[str]:
    if not instances:
        raise BadRequest("JSON Value: No values in 'instances' array")
    named = isinstance(instances[0], NamedTextInstance)
    texts = []
    for index, item in enumerate(instances):
        if isinstance(item, NamedTextInstance) != named:
            kind = "object" if named else "value/list"
            raise BadRequest(f"Expecting {kind} but got {'list' if named else 'object'} at item {index} of input list")
        texts.append(_text(item.texts if named else item, f"instances[{index}]"))
    return texts


def _columnar_texts(inputs: list | NamedTextInputs) -> list:
    values = inputs.texts if isinstance(inputs, NamedTextInputs) else inputs
    return [_text(value, f"inputs[{index}]") for index, value in enumerate(values)]


def _text(value: str | Base64Value, where: str) -> str:
    """A text, or its ``{"b64": ...}`` form decoded (it must be base64 of UTF-8 text)."""
    if isinstance(value, str):
        return value
    try:
        return base64.b64decode(value.b64, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: Unable to base64 decode to UTF-8 text") from None
