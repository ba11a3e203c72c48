"""HTTP routes: validate, tokenize, enqueue, wait, answer. No model code here."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING

import orjson
import redis
from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from service import metrics
from service.errors import BadRequest, DeadlineExceeded, Overloaded, PayloadTooLarge, Unavailable, UnsupportedMediaType
from service.queue import QueueFull, WorkerError

if TYPE_CHECKING:
    from service.app import Resources

bp = Blueprint("api", __name__)

REQUEST_ID_HEADER = "X-Request-ID"
DEADLINE_HEADER = "X-Deadline-Ms"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class PredictRequest(BaseModel):
    """``{"text": "..."}`` or ``{"texts": ["...", ...]}``; strict: no type coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = None
    texts: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        return self


def _resources() -> Resources:
    return current_app.extensions["sentiment"]


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


@bp.before_app_request
def assign_request_id() -> None:
    g.started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER)
    g.request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    if given is not None and given != g.request_id:
        raise BadRequest(f"{REQUEST_ID_HEADER} must be 1-128 characters of letters, digits and ._:/+=-")


@bp.after_app_request
def tag_response(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.HTTP_REQUESTS.labels(route, str(response.status_code)).inc()
    if route == "/predict":
        metrics.HTTP_SECONDS.observe(time.perf_counter() - g.started)
    return response


def parse_texts(max_texts: int, max_chars: int) -> list[str]:
    """The request's texts, or the 4xx that explains what is wrong with it."""
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise UnsupportedMediaType(f"send JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})")
    body = request.get_data(cache=False)  # Flask refuses bodies over MAX_CONTENT_LENGTH with 413
    if not body.strip():
        raise BadRequest('empty body: send {"text": "..."} or {"texts": [...]}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object: {"text": "..."} or {"texts": [...]}')
    try:
        parsed = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        raise BadRequest(problems) from None
    texts = [parsed.text] if parsed.text is not None else parsed.texts
    if not texts:
        raise BadRequest('"texts" must hold at least one text')
    if len(texts) > max_texts:
        raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {max_texts}")
    for index, text in enumerate(texts):
        where = "text" if parsed.text is not None else f"texts[{index}]"
        if len(text) > max_chars:
            raise PayloadTooLarge(f"{where} has {len(text)} characters; the limit is {max_chars}")
        if "\x00" in text:
            raise BadRequest(f"{where} contains a NUL character")
        if not text.strip():
            raise BadRequest(f"{where} is empty")
    return texts


def deadline_seconds(default_ms: int) -> float:
    """The server's deadline, or the client's shorter one from ``X-Deadline-Ms``."""
    given = request.headers.get(DEADLINE_HEADER)
    if given is None:
        return default_ms / 1000
    try:
        value = int(given)
    except ValueError:
        raise BadRequest(f"{DEADLINE_HEADER} must be a whole number of milliseconds") from None
    if value <= 0:
        raise BadRequest(f"{DEADLINE_HEADER} must be positive")
    return min(value, default_ms) / 1000


@bp.post("/predict")
def predict() -> Response:
    res = _resources()
    settings = res.settings
    texts = parse_texts(settings.max_texts_per_request, settings.max_text_chars)
    budget_s = deadline_seconds(settings.default_deadline_ms)
    give_up_at = time.perf_counter() + budget_s
    encoded = res.tokenizer.encode_batch(texts)
    metrics.TEXTS_RECEIVED.inc(len(texts))
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        metrics.TEXTS_TRUNCATED.inc(truncated)

    key = uuid.uuid4().hex  # never the client's id: two clients may send the same one
    retry = {"Retry-After": str(settings.retry_after_s)}
    try:
        if not _workers_alive(res):
            raise Unavailable("no inference worker is running for this model", retry)
        res.queue.enqueue(key, [e.ids for e in encoded], int((time.time() + budget_s) * 1000), settings.queue_max_requests)
        queued_at = time.perf_counter()
        probabilities = res.results.wait_result(key, give_up_at - time.perf_counter())
    except QueueFull:
        raise Overloaded("too many requests waiting; retry later", retry) from None
    except WorkerError as exc:
        raise Unavailable(f"the inference worker could not score this request: {exc}", retry) from None
    except redis.RedisError:
        metrics.REDIS_ERRORS.inc()
        raise Unavailable("the request queue (Redis) is unavailable", retry) from None
    if probabilities is None:
        raise DeadlineExceeded(f"no result within the deadline of {budget_s * 1000:.0f} ms")
    metrics.QUEUE_WAIT_SECONDS.observe(time.perf_counter() - queued_at)

    negative, positive = res.model.label_names
    threshold = res.model.threshold
    predictions = [
        {
            "label": positive if p >= threshold else negative,
            "score": round(p, 6),
            "truncated": e.truncated,
            "tokens": e.n_tokens,
        }
        for p, e in zip(probabilities, encoded, strict=True)
    ]
    return json_response(
        {"predictions": predictions, "model": {"name": res.model.name, "version": res.model.version}, "request_id": g.request_id}
    )


def _workers_alive(res: Resources) -> bool:
    """At most one Redis call per second per process: is any worker heartbeating?"""
    now = time.monotonic()
    if now - res.workers_checked_at > 1.0:
        res.workers_alive = res.queue.live_workers(res.settings.heartbeat_ttl_s) > 0
        res.workers_checked_at = now
    return res.workers_alive


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    res = _resources()
    checks = {"vocabulary": res.tokenizer.vocab_size > 2, "redis": False, "workers": 0}
    reasons = []
    try:
        res.queue.redis.ping()
        checks["redis"] = True
        checks["workers"] = res.queue.live_workers(res.settings.heartbeat_ttl_s)
        checks["backlog"] = res.queue.backlog()
    except redis.RedisError as exc:
        reasons.append(f"Redis does not answer ({type(exc).__name__})")
    if not checks["vocabulary"]:
        reasons.append("vocabulary not loaded")
    if checks["redis"] and not checks["workers"]:
        reasons.append(f"no live inference worker has {res.model.name} v{res.model.version} loaded")
    body = {
        "status": "not ready" if reasons else "ready",
        "model": {"name": res.model.name, "version": res.model.version},
        "checks": checks,
    }
    if reasons:
        body["reasons"] = reasons
    return json_response(body, 503 if reasons else 200)


@bp.get("/model")
def model_info() -> Response:
    res = _resources()
    return json_response({"name": res.model.name, "version": res.model.version, "metadata": res.model.metadata})


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    res = _resources()

    def read_state() -> dict[str, float]:
        return {"redis_up": 1, "queue_backlog": res.queue.backlog(), "live_workers": res.queue.live_workers(res.settings.heartbeat_ttl_s)}

    body, content_type = metrics.render(read_state)
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)
