"""Reading a request's JSON body, once for every protocol: parse it, check it against its model, say what is wrong.

The service's own routes insist on ``Content-Type: application/json`` (415
otherwise); TensorFlow Serving and KServe read any content type as JSON, as
their servers do. Either way: an empty body, malformed JSON, invalid UTF-8,
lone surrogates or nesting past 1024 levels (orjson refuses them) is a 400
that says why; a body over the limit is Flask's 413 before it is read.
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from flask import request
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, UnsupportedMediaType

Model = TypeVar("Model", bound=BaseModel)


def parse_json(body: bytes, what: str = "the body") -> object:
    """``body`` as JSON, or a 400 that says why not."""
    if not body.strip():
        raise BadRequest(f"{what} is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON in {what}: {exc}") from None


def json_body(*, require_json_type: bool = False) -> object:
    """The request's body as JSON; with ``require_json_type``, a 415 unless it says it is JSON."""
    if require_json_type and not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise UnsupportedMediaType(f"send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})")
    return parse_json(request.get_data(cache=False))


def validated(model: type[Model], payload: object, not_an_object: str) -> Model:
    """``payload`` checked by ``model``; a 400 naming the first few problems (``not_an_object`` if it is no JSON object)."""
    if not isinstance(payload, dict):
        raise BadRequest(not_an_object)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(validation_problems(exc)) from None


def validation_problems(exc: ValidationError, limit: int = 5) -> str:
    """The first few problems pydantic found, as ``field.path: what is wrong`` joined by ``; ``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:limit])
