"""Prometheus metrics of the API processes and of the inference workers.

The API runs as several gunicorn processes, so its metrics use
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by
``service/gunicorn_conf.py``); ``/metrics`` merges them and adds the queue's
state read from Redis at scrape time. Each inference worker serves its own
metrics on ``SENTIMENT_WORKER_METRICS_PORT`` (+ its index).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)

# --- API -------------------------------------------------------------------------
HTTP_REQUESTS = Counter("sentiment_http_requests_total", "HTTP requests answered, by route and status.", ["route", "status"])
HTTP_SECONDS = Histogram("sentiment_http_request_seconds", "Time to answer /predict, end to end.", buckets=LATENCY_BUCKETS)
TEXTS_RECEIVED = Counter("sentiment_texts_received_total", "Texts accepted by /predict.")
TEXTS_TRUNCATED = Counter("sentiment_texts_truncated_total", "Accepted texts longer than the model's token limit.")
QUEUE_WAIT_SECONDS = Histogram("sentiment_queue_wait_seconds", "From enqueue to result, as the API saw it.", buckets=LATENCY_BUCKETS)

# --- inference workers -----------------------------------------------------------
BATCH_TEXTS = Histogram("sentiment_batch_texts", "Texts per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 96, 128, 256))
BATCH_TOKENS = Histogram(
    "sentiment_batch_tokens", "Padded tokens per model call.", buckets=(64, 256, 1024, 4096, 8192, 16384, 32768, 65536)
)
MODEL_SECONDS = Histogram("sentiment_model_seconds", "Time of one model call.", buckets=LATENCY_BUCKETS)
TEXTS_SCORED = Counter("sentiment_texts_scored_total", "Texts run through the model.")
REQUESTS_EXPIRED = Counter("sentiment_requests_expired_total", "Requests dropped unrun because their deadline had passed.")
REQUESTS_RECLAIMED = Counter("sentiment_requests_reclaimed_total", "Requests taken over from a worker that stopped answering.")
INFERENCE_ERRORS = Counter("sentiment_inference_errors_total", "Model calls that failed.")
REDIS_ERRORS = Counter("sentiment_redis_errors_total", "Redis calls that failed (connection or timeout).")


class QueueCollector:
    """Gauges read from Redis when Prometheus scrapes: backlog and live workers."""

    def __init__(self, read_state: Callable[[], dict[str, float]]):
        self.read_state = read_state

    def collect(self):
        try:
            state = self.read_state()
        except Exception:  # Redis away: report it instead of failing the scrape
            state = {"redis_up": 0}
        for name, value in state.items():
            yield GaugeMetricFamily(f"sentiment_{name}", f"Queue state: {name.replace('_', ' ')}.", value=value)


def render(read_state: Callable[[], dict[str, float]]) -> tuple[bytes, str]:
    """The API's ``/metrics`` body: every API process's metrics plus the queue's state."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    queue_registry = CollectorRegistry()
    queue_registry.register(QueueCollector(read_state))
    return generate_latest(registry) + generate_latest(queue_registry), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int) -> None:
    start_http_server(port)
