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
from service.api.serving import router

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented("Liveness: the process answers", tag="operations", responses={200: ("Alive.", HealthResponse)})
def healthz() -> Response:
    return json_response({"status": "ok"})


def readiness() -> tuple[dict, list[str]]:
    """What ``/readyz`` checks, and why it is not ready (empty when ready): Redis answers, and every served model's
    default version has a live worker (the counts are the default model's)."""
    served = router()
    config = served.config
    default = served.scorer(config.default_model, config.models[config.default_model].default)
    checks = {"vocabulary": default.tokenizer.vocab_size > 2, "redis": False, "workers": 0}
    reasons = []
    try:
        default.queue.redis.ping()
        checks["redis"] = True
        checks["workers"] = default.queue.live_workers(served.settings.heartbeat_ttl_s)
        checks["backlog"] = default.queue.backlog()
        for policy in config.models.values():
            scorer = served.scorer(policy.name, policy.default)
            if scorer.queue.live_workers(served.settings.heartbeat_ttl_s) == 0:
                reasons.append(f"no live inference worker has {policy.name} v{policy.default} loaded")
    except redis.RedisError as exc:
        reasons.append(f"Redis does not answer ({type(exc).__name__})")
    if not checks["vocabulary"]:
        reasons.append("vocabulary not loaded")
    return checks, reasons


@bp.get("/readyz")
@documented(
    "Readiness: Redis answers, a live worker serves every model's default version",
    tag="operations",
    responses={200: ("Ready.", ReadyResponse), 503: ("Not ready; `reasons` says why.", ReadyResponse)},
)
def readyz() -> Response:
    config = router().config
    checks, reasons = readiness()
    model = {"name": config.default_model, "version": config.models[config.default_model].default}
    body = {"status": "not ready" if reasons else "ready", "model": model, "checks": checks}
    if reasons:
        body["reasons"] = reasons
    return json_response(body, 503 if reasons else 200)


@bp.get("/metrics")
@documented(
    "Prometheus metrics",
    tag="operations",
    description="All API processes' metrics, plus each served version's queue and live workers, read from Redis.",
    responses={200: ("Prometheus' text exposition format.", Body(media_type="text/plain", schema={"type": "string"}))},
)
def prometheus_metrics() -> Response:
    served = router()
    config = served.config
    ttl = served.settings.heartbeat_ttl_s

    def read_state() -> metrics.State:
        versions, ready = {}, True
        for name, version in config.versions():
            state = served.scorer(name, version).queue.state(ttl)
            versions[(name, version)] = {**state, "version_available": int(state["live_workers"] > 0)}
            ready &= version != config.models[name].default or state["live_workers"] > 0
        return {"ready": int(ready), "default_deadline_seconds": served.settings.default_deadline_ms / 1000}, versions

    info = [(n, v, served.scorer(n, v).model.metadata.get("tokenizer", {}).get("scheme", "")) for n, v in config.versions()]
    body, content_type = metrics.render(read_state, metrics.info_gauges(info))
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)
