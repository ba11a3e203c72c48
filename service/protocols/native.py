"""The service's own API: ``POST /predict`` and ``GET /model``.

Routes only parse and shape: scoring goes through `service.inference`, like
every other protocol's routes.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, g, request
from pydantic import ValidationError

from service.errors import BadRequest, UnsupportedMediaType
from service.hooks import deadline_seconds, inference_route
from service.inference import inference
from service.openapi import Body, documented
from service.protocols.common import validation_problems
from service.responses import json_response
from service.schemas import ModelInfoResponse, PredictRequest, PredictResponse

bp = Blueprint("native", __name__)


def read_json_body() -> object:
    """The request's JSON body, or the 4xx (415, 400, 413) that says what is wrong with it."""
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise UnsupportedMediaType(f"send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})")
    body = request.get_data(cache=False)  # Flask refuses bodies over MAX_CONTENT_LENGTH with 413
    if not body.strip():
        raise BadRequest("empty body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


@bp.post("/predict")
@documented(
    "Score one text or a batch",
    tag="service",
    description="One prediction per text, in input order. Limits (count, length, body size) are in `GET /model`.",
    request=Body(
        PredictRequest,
        examples={
            "one text": {"text": "A moving, beautifully acted film."},
            "a batch": {"texts": ["A moving, beautifully acted film.", "Dull, predictable and far too long."]},
            "with explanations": {"text": "Broke after two days, do not buy.", "explain": True},
        },
    ),
    responses={
        200: ("The predictions.", PredictResponse),
        400: "Malformed JSON, invalid UTF-8, wrong types, unknown fields, both or neither of text/texts, an empty "
        "or blank text, a NUL character, a bad X-Deadline-Ms or X-Request-ID.",
        413: "Body over the limit, too many texts, or a text too long.",
        415: "A content type other than application/json.",
    },
    deadline=True,
)
@inference_route
def predict() -> Response:
    path = inference()
    payload = read_json_body()
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object: {"text": "..."} or {"texts": [...]}')
    try:
        parsed = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(validation_problems(exc)) from None
    texts = path.check_texts([parsed.text], "text") if parsed.text is not None else path.check_texts(parsed.texts, "texts")
    if parsed.explain and not path.model.explains:
        raise BadRequest(f"{path.model.name} v{path.model.version} cannot explain its scores (exported before explanations)")
    predictions = path.predict(texts, deadline_seconds(path.settings.default_deadline_ms), explain=parsed.explain)
    model = {"name": path.model.name, "version": path.model.version}
    return json_response({"predictions": [p.as_dict() for p in predictions], "model": model, "request_id": g.request_id})


@bp.get("/model")
@documented(
    "The served model and the request limits",
    tag="service",
    responses={200: ("Name, version, limits and the version's metadata.json.", ModelInfoResponse)},
)
def model_info() -> Response:
    path = inference()
    settings = path.settings
    limits = {
        "max_texts_per_request": settings.max_texts_per_request,
        "max_text_chars": settings.max_text_chars,
        "max_body_bytes": settings.max_body_bytes,
        "default_deadline_ms": settings.default_deadline_ms,
    }
    return json_response({"name": path.model.name, "version": path.model.version, "limits": limits, "metadata": path.model.metadata})
