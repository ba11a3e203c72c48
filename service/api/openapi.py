"""``GET /openapi.json``: the OpenAPI 3.1 document of every route, generated from the routes' own declarations.

Each view declares what it takes and answers with `documented` (its request and
response bodies are models of `service.api.schemas`); the document is put together
from the application's URL map, so a route cannot exist without being in it
(building the document fails on an undeclared route, and tests/test_openapi.py
builds it). The typed objects and the component schemas come from
``openapi-pydantic``; nothing here writes the document's structure by hand.

The document is built once per process, on its first request, never on the
path of ``/predict``; `documented` only attaches the declaration to the view
function (no wrapper, no cost per request).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app
from openapi_pydantic.util import PydanticSchema, construct_open_api_with_schema_class
from openapi_pydantic.v3.v3_1 import (
    Components,
    DataType,
    Example,
    Header,
    Info,
    MediaType,
    OpenAPI,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
    Tag,
)
from openapi_pydantic.v3.v3_1 import Response as ResponseObject
from pydantic import BaseModel

from service import __version__
from service.api.auth import protects
from service.api.hooks import REQUEST_ID_HEADER
from service.api.schemas.common import ErrorResponse
from service.api.serving import DEADLINE_HEADER

bp = Blueprint("openapi", __name__)

JSON = "application/json"
RETRY_AFTER = "Retry-After"
ERROR_DESCRIPTIONS = {
    400: "Bad request: what is wrong is in the error message.",
    404: "Unknown model or version.",
    413: "Too large: the body, the number of texts or a text's length is over its limit.",
    415: "Unsupported media type.",
    401: "No API key, or not one in force (`WWW-Authenticate: Bearer`). Only when the service asks for keys.",
    403: "The API key lacks a scope the request needs (`explain` for explanations).",
    429: "The API key is over its rate: retry after Retry-After seconds (the RateLimit headers say more).",
    503: "Overloaded (the queue is full) or unavailable (Redis or the inference workers): retry after Retry-After seconds.",
    504: "No result within the deadline (X-Deadline-Ms, or the server's default).",
}

TAGS = [
    Tag(name="service", description="The service's own API: `POST /predict`, model information."),
    Tag(name="tensorflow-serving", description="TensorFlow Serving's REST API (`/v1`), for its clients; signature `predict_text`."),
    Tag(name="kserve-v2", description="KServe's Open Inference Protocol v2 (`/v2`), with the binary tensor data extension."),
    Tag(name="operations", description="Probes and metrics for orchestrators and monitoring."),
    Tag(name="pages", description="The demo page, this documentation, and the files they load."),
]


@dataclass(frozen=True)
class Body:
    """One media type of a request or response body: a model of `service.api.schemas`, or a raw JSON Schema."""

    model: type[BaseModel] | None = None
    media_type: str = JSON
    schema: dict[str, Any] | None = None
    examples: dict[str, Any] = field(default_factory=dict)
    any_of: tuple[type[BaseModel], ...] = ()


BodySpec = type[BaseModel] | Body | Sequence[Body]


@dataclass(frozen=True)
class Declaration:
    """What a route takes and answers; see `documented`."""

    summary: str
    tag: str
    description: str = ""
    request: BodySpec | None = None
    responses: dict[int, str | tuple[str, BodySpec]] = field(default_factory=dict)
    errors: BodySpec = ErrorResponse
    deadline: bool = False
    parameters: dict[str, str] = field(default_factory=dict)


def documented(summary: str, *, tag: str, **declaration: Any) -> Callable:
    """Attach the route's `Declaration` to its view, for the document; the view itself is returned unchanged.

    ``responses`` maps a status to a description (an error: its body is
    ``errors``) or to ``(description, body)``. ``deadline=True`` marks a route
    that scores texts: it takes ``X-Deadline-Ms`` and may answer 503 (with
    ``Retry-After``) and 504. Every route may answer 400 for a bad
    ``X-Request-ID``, and every answer carries ``X-Request-ID``.
    """
    spec = Declaration(summary, tag, **declaration)

    def attach(view: Callable) -> Callable:
        view.openapi = spec  # type: ignore[attr-defined]
        return view

    return attach


_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")
_CONVERTER_SCHEMAS = {"int": Schema(type=DataType.INTEGER, minimum=0), "float": Schema(type=DataType.NUMBER)}


class UndocumentedRoute(RuntimeError):
    """A route without a `documented` declaration: the document would not cover it."""


def openapi_path(rule: str) -> tuple[str, list[tuple[str, str]]]:
    """``/v1/models/<name>/versions/<int:version>`` → ``/v1/models/{name}/versions/{version}`` and its (name, converter) pairs."""
    arguments = [(m["name"], m["converter"] or "default") for m in _RULE_ARGUMENT.finditer(rule)]
    return _RULE_ARGUMENT.sub(lambda m: "{" + m["name"] + "}", rule), arguments


def _bodies(spec: BodySpec) -> list[Body]:
    if isinstance(spec, Body):
        return [spec]
    if isinstance(spec, type) and issubclass(spec, BaseModel):
        return [Body(spec)]
    return list(spec)


def _models(spec: BodySpec) -> tuple[type[BaseModel], ...]:
    return tuple(body.model for body in _bodies(spec) if body.model is not None)


def _content(spec: BodySpec) -> dict[str, MediaType]:
    content = {}
    for body in _bodies(spec):
        if body.model is not None:
            schema = PydanticSchema(schema_class=body.model)
        elif body.any_of:
            schema = Schema(anyOf=[PydanticSchema(schema_class=model) for model in body.any_of])
        else:
            schema = Schema.model_validate(body.schema or {})
        examples = {name: Example(value=value) for name, value in body.examples.items()} or None
        content[body.media_type] = MediaType(media_type_schema=schema, examples=examples)
    return content


def _example(value: Any, converter: str) -> Any:
    """A path parameter's example in its parameter's type (the version is a number in /v1, a string in /v2)."""
    return value if value is None or converter == "int" else str(value)


def _reference(kind: str, name: str) -> Reference:
    return Reference(ref=f"#/components/{kind}/{name}")


def operation_id(endpoint: str, method: str, distinct_arguments: list[str]) -> str:
    """``tfserving_model_status_get``; a view serving several rules (``/models/<name>`` and ``/models/<name>/versions/
    <version>``) gets one per rule, the rule's distinguishing path parameters appended: ``..._by_version_get``."""
    by = f"_by_{'_'.join(distinct_arguments)}" if distinct_arguments else ""
    return f"{endpoint.replace('.', '_')}{by}_{method.lower()}"


SECURITY = [{"bearer": []}, {"apiKey": []}]  # either header


def _operation(
    spec: Declaration,
    endpoint: str,
    method: str,
    arguments: list[tuple[str, str]],
    distinct: list[str],
    examples: dict[str, Any],
    keyed: bool = False,
) -> Operation:
    parameters: list[Parameter | Reference] = [
        Parameter(
            name=name,
            param_in="path",
            required=True,
            description=spec.parameters.get(name),
            param_schema=_CONVERTER_SCHEMAS.get(converter, Schema(type=DataType.STRING)),
            example=_example(examples.get(name), converter),
        )
        for name, converter in arguments
    ]
    parameters.append(_reference("parameters", REQUEST_ID_HEADER))
    responses: dict[int, str | tuple[str, BodySpec]] = {**spec.responses}
    responses.setdefault(400, ERROR_DESCRIPTIONS[400])  # a bad X-Request-ID, on any route
    if keyed:
        for status in (401, 403, 429):
            responses.setdefault(status, ERROR_DESCRIPTIONS[status])
    if spec.deadline:
        parameters.append(_reference("parameters", DEADLINE_HEADER))
        responses.setdefault(503, ERROR_DESCRIPTIONS[503])
        responses.setdefault(504, ERROR_DESCRIPTIONS[504])
    answers = {}
    for status, declared in sorted(responses.items()):
        description, body = (declared, spec.errors) if isinstance(declared, str) else declared
        if status in (400, 404) and arguments and body is not ErrorResponse and isinstance(declared, str):
            # A URL that matches no route (an empty segment, a version that is not a number) never reaches the
            # protocol's blueprint: the application answers it (404, or 400 for a bad X-Request-ID) with its own body.
            description += " A URL that matches no route gets the service's own error body."
            body = Body(any_of=(*_models(body), ErrorResponse))
        headers: dict[str, Header | Reference] = {REQUEST_ID_HEADER: _reference("headers", REQUEST_ID_HEADER)}
        if (status == 503 and spec.deadline) or status == 429:
            headers[RETRY_AFTER] = _reference("headers", RETRY_AFTER)
        answers[str(status)] = ResponseObject(description=description, headers=headers, content=_content(body))
    request_body = RequestBody(required=True, content=_content(spec.request)) if spec.request is not None else None
    return Operation(
        tags=[spec.tag],
        summary=spec.summary,
        description=spec.description or None,
        operationId=operation_id(endpoint, method, distinct),
        parameters=parameters,
        requestBody=request_body,
        responses=answers,
        security=SECURITY if keyed else None,
    )


def _components(keyed: bool = False) -> Components:
    request_id = Schema(type=DataType.STRING, pattern=r"^[A-Za-z0-9._:/+=-]{1,128}$")
    schemes = {
        "bearer": SecurityScheme(type="http", scheme="bearer", description="An API key (`python -m service.keys create`)."),
        "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header", description="The same key."),
    }
    return Components(
        securitySchemes=schemes if keyed else None,
        parameters={
            REQUEST_ID_HEADER: Parameter(
                name=REQUEST_ID_HEADER,
                param_in="header",
                description="Your id for the request, echoed in the response and in the logs; generated when absent.",
                param_schema=request_id,
            ),
            DEADLINE_HEADER: Parameter(
                name=DEADLINE_HEADER,
                param_in="header",
                description="Milliseconds the request may take, at most the server's default (2,000 ms); past it the answer is 504.",
                param_schema=Schema(type=DataType.INTEGER, minimum=1),
            ),
        },
        headers={
            REQUEST_ID_HEADER: Header(
                description="The request's id: the client's X-Request-ID, or a generated one.", required=True, param_schema=request_id
            ),
            RETRY_AFTER: Header(
                description="Seconds to wait before retrying.", required=True, param_schema=Schema(type=DataType.INTEGER, minimum=0)
            ),
        },
    )


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every route of ``app`` (HEAD, which Flask adds to every GET route, left out).

    Path parameters ``name`` and ``version`` get the served model's as examples (what "Try it out" fills in).
    """
    config = app.extensions["sentiment"].config
    keyed = app.extensions.get("auth", "off") != "off"
    examples = {"name": config.default_model, "version": config.models[config.default_model].default, "label": "stable"}
    paths: dict[str, dict[str, Operation]] = {}
    rules = sorted(app.url_map.iter_rules(), key=lambda r: r.rule)
    shared: dict[str, set[str]] = {}  # the path parameters every rule of an endpoint has
    for rule in rules:
        names = {name for name, _ in openapi_path(rule.rule)[1]}  # the rule's own (rule.arguments counts defaults too)
        shared[rule.endpoint] = shared[rule.endpoint] & names if rule.endpoint in shared else names
    for rule in rules:
        spec = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if spec is None:
            raise UndocumentedRoute(f"{rule.rule} ({rule.endpoint}) has no `documented` declaration")
        path, arguments = openapi_path(rule.rule)
        distinct = [name for name, _ in arguments if name not in shared[rule.endpoint]]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = _operation(spec, rule.endpoint, method, arguments, distinct, examples, keyed and protects(rule.endpoint))
            paths.setdefault(path, {}).setdefault(method.lower(), operation)
    document = OpenAPI(
        openapi="3.1.0",
        info=Info(
            title="Sentiment inference service",
            version=__version__,
            description="Scores English texts as positive or negative. One inference path (a Redis queue and TensorFlow "
            "workers) behind three protocols: the service's own `POST /predict`, TensorFlow Serving's REST API and "
            "KServe's Open Inference Protocol v2.",
        ),
        tags=TAGS,
        paths={path: PathItem(**operations) for path, operations in paths.items()},
        components=_components(keyed),
    )
    return construct_open_api_with_schema_class(document).model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


def document_bytes() -> bytes:
    """The current application's document as JSON, built on first use and kept for the life of the process."""
    cached = current_app.extensions.get("openapi")
    if cached is None:
        cached = current_app.extensions["openapi"] = orjson.dumps(build_document(current_app))
    return cached


@bp.get("/openapi.json")
@documented(
    "This document",
    tag="pages",
    responses={200: ("The OpenAPI 3.1 document of every route.", Body(schema={"type": "object"}))},
)
def openapi_json() -> Response:
    return Response(document_bytes(), mimetype=JSON)
