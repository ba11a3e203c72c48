"""What orchestrators and monitoring poll: ``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics``.

`readiness` is also what the Open Inference Protocol's ``/v2/health/ready``
answers (`service.protocols.kserve`): one definition of ready.
"""

from __future__ import annotations

import redis
from flask import Blueprint, Response

from service import metrics
from service.api.openapi import Body, documented
from service.api.responses import json_response
from service.api.schemas.native import HealthResponse, ReadyResponse
from service.api.serving import scorer

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented("Liveness: the process answers", tag="operations", responses={200: ("Alive.", HealthResponse)})
def healthz() -> Response:
    return json_response({"status": "ok"})


def readiness() -> tuple[dict, list[str]]:
    """What ``/readyz`` checks, and why it is not ready (empty when ready)."""
    by = scorer()
    checks = {"vocabulary": by.tokenizer.vocab_size > 2, "redis": False, "workers": 0}
    reasons = []
    try:
        by.queue.redis.ping()
        checks["redis"] = True
        checks["workers"] = by.queue.live_workers(by.settings.heartbeat_ttl_s)
        checks["backlog"] = by.queue.backlog()
    except redis.RedisError as exc:
        reasons.append(f"Redis does not answer ({type(exc).__name__})")
    if not checks["vocabulary"]:
        reasons.append("vocabulary not loaded")
    if checks["redis"] and not checks["workers"]:
        reasons.append(f"no live inference worker has {by.model.name} v{by.model.version} loaded")
    return checks, reasons


@bp.get("/readyz")
@documented(
    "Readiness: vocabulary loaded, Redis answers, a live worker serves this model version",
    tag="operations",
    responses={200: ("Ready.", ReadyResponse), 503: ("Not ready; `reasons` says why.", ReadyResponse)},
)
def readyz() -> Response:
    by = scorer()
    checks, reasons = readiness()
    model = {"name": by.model.name, "version": by.model.version}
    body = {"status": "not ready" if reasons else "ready", "model": model, "checks": checks}
    if reasons:
        body["reasons"] = reasons
    return json_response(body, 503 if reasons else 200)


@bp.get("/metrics")
@documented(
    "Prometheus metrics",
    tag="operations",
    description="All API processes' metrics, plus the queue backlog and the live workers read from Redis.",
    responses={200: ("Prometheus' text exposition format.", Body(media_type="text/plain", schema={"type": "string"}))},
)
def prometheus_metrics() -> Response:
    by = scorer()

    def read_state() -> dict[str, float]:
        state = by.queue.state(by.settings.heartbeat_ttl_s)
        ready = by.tokenizer.vocab_size > 2 and state["live_workers"] > 0
        return {**state, "ready": int(ready), "default_deadline_seconds": by.settings.default_deadline_ms / 1000}

    tokenizer = by.model.metadata.get("tokenizer", {}).get("scheme", "")
    body, content_type = metrics.render(read_state, metrics.info_gauges(by.model.name, by.model.version, tokenizer))
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)
