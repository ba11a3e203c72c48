"""The service's own API: ``POST /predict`` and ``GET /model``.

Routes only parse and shape: scoring is the `service.scoring.Scorer`'s, as for
every other protocol's routes.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from service.api.bodies import json_body, validated
from service.api.hooks import inference_route
from service.api.openapi import Body, documented
from service.api.responses import json_response
from service.api.schemas.native import ModelInfoResponse, PredictRequest, PredictResponse
from service.api.serving import route, router, score

bp = Blueprint("native", __name__)
NOT_AN_OBJECT = 'the body must be a JSON object: {"text": "..."} or {"texts": [...]}'


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
            "a version of a model": {"text": "A moving, beautifully acted film.", "model": "sentiment", "version": 3},
        },
    ),
    responses={
        200: ("The predictions.", PredictResponse),
        400: "Malformed JSON, invalid UTF-8, wrong types, unknown fields, both or neither of text/texts, an empty "
        "or blank text, a NUL character, a bad X-Deadline-Ms or X-Request-ID, both a version and a label.",
        404: "An unknown model, a version that is not served, or an unknown label (GET /model lists them).",
        413: "Body over the limit, too many texts, or a text too long.",
        415: "A content type other than application/json.",
    },
    deadline=True,
)
@inference_route
def predict() -> Response:
    parsed = validated(PredictRequest, json_body(require_json_type=True), NOT_AN_OBJECT)
    to = route(parsed.model, parsed.version, parsed.label)
    by = to.scorer
    texts = by.check_texts([parsed.text], "text") if parsed.text is not None else by.check_texts(parsed.texts, "texts")
    scored = score(to, texts, explain=parsed.explain)
    model = {"name": scored.model.name, "version": scored.model.version}
    return json_response({"predictions": [p.as_dict() for p in scored.predictions], "model": model, "request_id": g.request_id})


@bp.get("/model")
@documented(
    "A served model: its versions and their states, its default and canary, the request limits",
    tag="service",
    description="The default model, or the one `?model=<name>` names (404 if it is not served).",
    responses={200: ("Name, versions, limits and the default version's metadata.json.", ModelInfoResponse), 404: "Unknown model."},
)
def model_info() -> Response:
    served = router()
    policy = served.policy(request.args.get("model"))
    default = served.scorer(policy.name, policy.default)
    settings = served.settings
    limits = {
        "max_texts_per_request": settings.max_texts_per_request,
        "max_text_chars": settings.max_text_chars,
        "max_body_bytes": settings.max_body_bytes,
        "default_deadline_ms": settings.default_deadline_ms,
    }
    body = {
        "name": policy.name,
        "version": policy.default,
        "limits": limits,
        "metadata": default.model.metadata,
        "versions": served.states(policy.name),
        "canary": {"version": policy.canary[0], "percent": policy.canary[1] * 100} if policy.canary else None,
        "shadow": {"version": policy.shadow[0], "percent": policy.shadow[1] * 100} if policy.shadow else None,
        "models": list(served.config.models),
    }
    return json_response(body)
