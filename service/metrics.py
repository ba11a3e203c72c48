"""Every Prometheus metric of the service, registered here and nowhere else.

Two tiers export them:

* **API processes** (``/metrics`` on the API port). gunicorn runs several of
  them, so they use prometheus-client's multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``, set by ``service/gunicorn_conf.py``);
  ``/metrics`` merges every process's files and adds what is read at scrape
  time: the queue's state from Redis (backlog, pending entries, age of the
  oldest waiting entry, live workers), readiness, and the info gauges.
* **Inference workers**, each on its own port (``SENTIMENT_WORKER_METRICS_PORT``
  + its index), single-process.

Names follow Prometheus conventions: one ``sentiment_`` prefix, ``_total`` for
counters, base units (``_seconds``, ``_ratio`` for shares in [0, 1]). Buckets
are cut for this service's real values (a review is ~230 tokens, a model call
1–100 ms, the default deadline 2 s), not the library's defaults.

The API's per-text metrics (scores, tokens, out-of-vocabulary share) are what
drifts first in a text model: the score distribution and the positive share
show the *output* moving, tokens per text and OOV share show the *input*
moving, before anyone has labels to measure accuracy with.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from service import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MODEL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05, 0.10, ..., 1.0
TOKEN_BUCKETS = (2, 5, 10, 20, 50, 100, 200, 300, 400, 600, 1000, 2000, 5000, 10000)
RATIO_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
EFFICIENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
WINDOW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
TEXTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 256)
PADDED_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

# --- API tier ----------------------------------------------------------------------------
HTTP_REQUESTS = Counter("sentiment_http_requests_total", "HTTP requests answered, by route and status.", ["route", "status"])
HTTP_SECONDS = Histogram(
    "sentiment_http_request_duration_seconds",
    "Time to answer an inference request (any protocol), end to end in the API, by the model version that answered.",
    ["route", "model", "version"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("sentiment_http_requests_in_flight", "Inference requests being handled right now.", multiprocess_mode="livesum")
REQUESTS_REFUSED = Counter(
    "sentiment_requests_refused_total",
    "Inference requests answered with an error, by reason (and version, once one was chosen; empty before).",
    ["reason", "model", "version"],
)
AUTH_REFUSALS = Counter(
    "sentiment_auth_refusals_total",
    "Requests refused by access control: missing (no key), invalid (not a key in force, or a malformed header: 401), "
    "forbidden (a scope: 403), rate_limited (429); by the key's name (empty for 401s: never the key itself).",
    ["reason", "key"],
)
KEY_REQUESTS = Counter("sentiment_key_requests_total", "Requests let in by access control, by the name of their key.", ["key"])
KEY_TEXTS = Counter("sentiment_key_texts_total", "Texts accepted for scoring, by the name of their key.", ["key"])
ROUTED = Counter(
    "sentiment_routed_requests_total",
    "Inference requests sent to a version: `default` (named neither a version nor a label), `canary` (default traffic the "
    "canary took), `named` (the request named the version or a label).",
    ["model", "version", "route"],
)
REQUEST_TEXTS = Histogram("sentiment_request_texts", "Texts per accepted inference request.", buckets=TEXTS_BUCKETS)
TEXTS_RECEIVED = Counter("sentiment_texts_received_total", "Texts accepted for scoring.")
TEXTS_TRUNCATED = Counter("sentiment_texts_truncated_total", "Accepted texts longer than the model reads (their middle was cut).")
TEXT_TOKENS = Histogram("sentiment_text_tokens", "Tokens per accepted text (before any truncation).", buckets=TOKEN_BUCKETS)
TEXT_OOV = Histogram(
    "sentiment_text_oov_ratio", "Share of each accepted text's tokens that are outside the vocabulary.", buckets=RATIO_BUCKETS
)
TEXT_WINDOWS = Histogram(
    "sentiment_text_windows", "Windows each accepted text is read in (long texts: more than one model sequence).", buckets=WINDOW_BUCKETS
)
EXPLAIN_REQUESTS = Counter("sentiment_explain_requests_total", "Inference requests that asked for explanations.")
PREDICTIONS = Counter("sentiment_predictions_total", "Predictions returned, by model version and label.", ["model", "version", "label"])
SCORES = Histogram(
    "sentiment_prediction_score", "Scores returned (probability of the positive label).", ["model", "version"], buckets=SCORE_BUCKETS
)
SHADOW_REQUESTS = Counter(
    "sentiment_shadow_requests_total",
    "Requests mirrored to a shadow version, by outcome: compared, dropped (its queue too long, no worker), expired, failed.",
    ["model", "version", "shadow_version", "outcome"],
)
SHADOW_TEXTS = Counter(
    "sentiment_shadow_texts_total",
    "Texts scored by both the version that answered and its shadow, by whether their labels agreed.",
    ["model", "version", "shadow_version", "agreement"],
)
SHADOW_SCORE_DIFFERENCE = Histogram(
    "sentiment_shadow_score_difference",
    "|score of the shadow - score of the version that answered|, per text compared.",
    ["model", "version", "shadow_version"],
    buckets=DIFFERENCE_BUCKETS,
)
RESULT_WAIT_SECONDS = Histogram(
    "sentiment_result_wait_seconds", "From enqueueing a request to receiving its result, as the API saw it.", buckets=WAIT_BUCKETS
)

# --- inference workers -------------------------------------------------------------------
# Every batch metric is by model version (bounded: only configured versions are ever loaded).
VERSION = ["model", "version"]
BATCHES = Counter("sentiment_batches_total", "Batches a worker took from the queue and answered.", VERSION)
BATCH_TEXTS = Histogram("sentiment_batch_texts", "Texts per model call.", VERSION, buckets=TEXTS_BUCKETS)
BATCH_TOKENS = Histogram(
    "sentiment_batch_padded_tokens", "Padded tokens per model call (texts x longest).", VERSION, buckets=PADDED_TOKEN_BUCKETS
)
PADDING_EFFICIENCY = Histogram(
    "sentiment_batch_padding_efficiency_ratio", "Real tokens / padded tokens of each model call.", VERSION, buckets=EFFICIENCY_BUCKETS
)
MODEL_SECONDS = Histogram("sentiment_model_duration_seconds", "Time of one model call.", VERSION, buckets=MODEL_BUCKETS)
QUEUE_WAIT_SECONDS = Histogram(
    "sentiment_queue_wait_seconds",
    "From enqueue to the start of the batch that scores it, as the worker saw it.",
    VERSION,
    buckets=WAIT_BUCKETS,
)
TEXTS_SCORED = Counter("sentiment_texts_scored_total", "Sequences (texts, or windows of long ones) run through the model.", VERSION)
TEXTS_EXPLAINED = Counter("sentiment_texts_explained_total", "Sequences run through the model's explaining graph.", VERSION)
REQUESTS_EXPIRED = Counter("sentiment_requests_expired_total", "Requests dropped unrun because their deadline had passed.", VERSION)
REQUESTS_RECLAIMED = Counter("sentiment_requests_reclaimed_total", "Requests taken over from a worker that stopped heartbeating.", VERSION)
INFERENCE_ERRORS = Counter("sentiment_inference_errors_total", "Model calls that failed.", VERSION)
VERSIONS_LOADED = Gauge("sentiment_worker_versions_loaded", "Model versions this worker has loaded, by state.", ["state"])
LAST_HEARTBEAT = Gauge("sentiment_worker_last_heartbeat_timestamp_seconds", "Unix time of the worker's last heartbeat in Redis.")
STARTUP_SECONDS = Gauge("sentiment_worker_startup_seconds", "From the worker's start to its first heartbeat: import, load, warm-up.")
WARMUP_SECONDS = Gauge("sentiment_worker_warmup_seconds", "Time the worker spent running every batch shape once before serving.")
WARMUP_COMPILED = Gauge(
    "sentiment_worker_warmup_compiled_programs", "XLA programs the warm-up compiled (0: every one was loaded from the compile cache)."
)

# --- both tiers --------------------------------------------------------------------------
REDIS_ERRORS = Counter("sentiment_redis_errors_total", "Redis calls that failed (connection or timeout).")


def info_gauges(models: list[tuple[str, int, str]], worker: dict[str, str] | None = None) -> list[GaugeMetricFamily]:
    """``sentiment_model_info`` (one per served (name, version, tokenizer)), ``sentiment_build_info`` (and on a worker
    ``sentiment_worker_info``): 1s whose labels say what runs."""
    model = GaugeMetricFamily("sentiment_model_info", "A served model version.", labels=["name", "version", "tokenizer"])
    for name, version, tokenizer in models:
        model.add_metric([name, str(version), tokenizer], 1)
    build = GaugeMetricFamily("sentiment_build_info", "The service's build.", labels=["version", "python"])
    build.add_metric([__version__, platform.python_version()], 1)
    families = [model, build]
    if worker is not None:
        info = GaugeMetricFamily("sentiment_worker_info", "This inference worker.", labels=sorted(worker))
        info.add_metric([worker[k] for k in sorted(worker)], 1)
        families.append(info)
    return families


# What `StateCollector` reads: the service's gauges, and each served version's.
State = tuple[dict[str, float], dict[tuple[str, int], dict[str, float]]]


class StateCollector:
    """Gauges computed when Prometheus scrapes: the queue's state read from Redis, readiness, versions, info.

    ``read_state`` returns ``({"ready": 1, ...}, {(model, version): {"queue_backlog": n, ...}})``; each key
    becomes ``sentiment_<key>``, the second kind labelled by model and version. If it raises (Redis away), the
    scrape still succeeds and says ``sentiment_redis_up 0``.
    """

    def __init__(self, read_state: Callable[[], State], constant: list[GaugeMetricFamily]):
        self.read_state = read_state
        self.constant = constant

    def collect(self):
        try:
            general, versions = self.read_state()
            general = {"redis_up": 1, **general}
        except Exception:  # Redis away: report it instead of failing the scrape
            general, versions = {"redis_up": 0, "ready": 0}, {}
        for name, value in general.items():
            yield GaugeMetricFamily(f"sentiment_{name}", STATE_HELP.get(name, name.replace("_", " ")), value=value)
        families: dict[str, GaugeMetricFamily] = {}
        for (model, version), values in versions.items():
            for name, value in values.items():
                if name not in families:
                    families[name] = GaugeMetricFamily(f"sentiment_{name}", STATE_HELP.get(name, name), labels=["model", "version"])
                families[name].add_metric([model, str(version)], value)
        yield from families.values()
        yield from self.constant


STATE_HELP = {
    "redis_up": "1 if Redis answered this scrape.",
    "ready": "1 if /readyz would answer 200 (Redis up, a live worker for every model's default version).",
    "queue_backlog": "Requests in the version's stream: waiting plus being scored.",
    "queue_pending": "Requests delivered to a worker and not yet answered.",
    "queue_oldest_waiting_age_seconds": "Age of the oldest request no worker has taken yet (0 when none waits).",
    "live_workers": "Inference workers serving this model version that heartbeated recently.",
    "version_available": "1 if the configured version is AVAILABLE (a live worker serves it), 0 while it is LOADING.",
    "default_deadline_seconds": "The server's default (and longest) deadline of a request.",
}


# Each tier exports its own metrics only (every process imports this module, so every metric exists in each).
API_TIER = (HTTP_REQUESTS, HTTP_SECONDS, IN_FLIGHT, REQUESTS_REFUSED, REQUEST_TEXTS, TEXTS_RECEIVED, TEXTS_TRUNCATED)
API_TIER += (TEXT_TOKENS, TEXT_OOV, TEXT_WINDOWS, EXPLAIN_REQUESTS, PREDICTIONS, SCORES, RESULT_WAIT_SECONDS, ROUTED)
API_TIER += (SHADOW_REQUESTS, SHADOW_TEXTS, SHADOW_SCORE_DIFFERENCE)
WORKER_TIER = (BATCHES, BATCH_TEXTS, BATCH_TOKENS, PADDING_EFFICIENCY, MODEL_SECONDS, QUEUE_WAIT_SECONDS, TEXTS_SCORED, TEXTS_EXPLAINED)
WORKER_TIER += (REQUESTS_EXPIRED, REQUESTS_RECLAIMED, INFERENCE_ERRORS, LAST_HEARTBEAT, STARTUP_SECONDS, WARMUP_SECONDS, WARMUP_COMPILED)
WORKER_TIER += (VERSIONS_LOADED,)


def _names(metrics) -> set[str]:
    return {family.name for metric in metrics for family in metric.describe()}


class Without:
    """``collector``'s families, except those named in ``drop``."""

    def __init__(self, collector, drop: set[str]):
        self.collector = collector
        self.drop = drop

    def collect(self):
        return (family for family in self.collector.collect() if family.name not in self.drop)


class ConstantCollector:
    """Families whose values never change (the info gauges)."""

    def __init__(self, families: list[GaugeMetricFamily]):
        self.families = families

    def collect(self):
        yield from self.families


def render(read_state: Callable[[], State], constant: list[GaugeMetricFamily]) -> tuple[bytes, str]:
    """The API's ``/metrics`` body: every API process's metrics plus the state read at scrape time."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        source = multiprocess.MultiProcessCollector(None)
    else:
        from prometheus_client import REGISTRY as source
    registry = CollectorRegistry()
    registry.register(Without(source, _names(WORKER_TIER)))
    registry.register(StateCollector(read_state, constant))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_worker_metrics(host: str, port: int, constant: list[GaugeMetricFamily]) -> None:
    """A worker's own ``/metrics`` (its metrics, the process and Python collectors, its info) on ``host:port``."""
    from prometheus_client import REGISTRY

    registry = CollectorRegistry()
    registry.register(Without(REGISTRY, _names(API_TIER)))
    registry.register(ConstantCollector(constant))
    start_http_server(port, addr=host, registry=registry)
