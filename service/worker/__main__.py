"""``python -m service.worker``: an inference worker. Run one per GPU (one on a CPU machine).

Start-up, in order: settings; the compile cache (before TensorFlow reads its
flags); TensorFlow and the model version; its programs (compiled, or loaded
from the cache) before the first heartbeat, so that no request waits for a
compile; the metrics server; then the loop (`service.worker.loop`). On a warm
cache the explanation programs load beside the loop instead, so that a
restarted worker serves a few seconds sooner.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time

from service import metrics
from service.config import load_settings
from service.logs import capture_native_stderr, configure_logging
from service.model_store import resolve
from service.queue import RequestQueue, connect
from service.worker import compile_cache
from service.worker.loop import InferenceWorker
from service.worker.runner import BatchRunner

log = logging.getLogger("service.worker")


def main() -> int:
    started = time.monotonic()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    capture_native_stderr()  # TensorFlow's own lines too, in the same format, its harmless "errors" at DEBUG
    if not settings.redis_url:
        sys.exit("SENTIMENT_REDIS_URL is not set (`make run` starts a Redis and sets it)")
    cache = compile_cache.configure(settings.compile_cache_dir)  # before TensorFlow reads its flags
    metrics.WARMUP_COMPILED.set(float("nan"))  # until the whole warm-up is over
    cached = compile_cache.entries(cache)
    from service.worker.model import SentimentModel, configure_devices  # TensorFlow

    device = configure_devices(settings.tf_threads)
    version = resolve(settings.model_dir, settings.model_version)
    model = SentimentModel(version, device)
    metrics.WARMUP_SECONDS.set(model.warm_up(settings.max_batch_size))

    def warm_up_explanations() -> None:
        model.warm_up(settings.max_batch_size, explain=True)
        compiled = compile_cache.entries(cache) - cached
        metrics.WARMUP_COMPILED.set(compiled)
        log.info("compile cache %s: %d program(s) compiled, the others loaded", cache or "off", compiled)

    # Explanations have programs of their own, half the total. When the cache had the prediction programs, it has
    # theirs too: they load beside the serving loop (an explain request that comes first waits ~0.1 s for its own,
    # a load, not a compile). Otherwise they compile now, so that no request waits for a compile.
    explanations_cached = cache is not None and compile_cache.entries(cache) == cached
    if not explanations_cached:
        warm_up_explanations()

    overhead = settings.step_overhead_texts
    if overhead is None:
        overhead = model.measure_step_overhead()
        log.info("one model step costs as much as %.1f texts: batches are split by length when that saves more", overhead)
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    if settings.worker_metrics_port:
        tokenizer = version.metadata.get("tokenizer", {}).get("scheme", "")
        worker_info = {"consumer": consumer, "device": device}
        try:
            metrics.serve_worker_metrics(
                settings.host, settings.worker_metrics_port, metrics.info_gauges(version.name, version.version, tokenizer, worker_info)
            )
            log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
        except OSError as exc:  # a busy port must not stop scoring: say so loudly instead
            log.error("worker metrics NOT served: port %d: %s", settings.worker_metrics_port, exc)
    connection = connect(settings.redis_url, settings.redis_timeout_s, blocking_s=settings.heartbeat_interval_s)
    queue = RequestQueue(connection, settings.redis_key_prefix, version.name, version.version)
    worker = InferenceWorker(settings, BatchRunner(settings, model, queue, overhead), consumer, device)
    worker.install_signal_handlers()
    metrics.STARTUP_SECONDS.set(time.monotonic() - started)  # the loop's first turn heartbeats at once
    if explanations_cached:
        threading.Thread(target=warm_up_explanations, name="warm-up", daemon=True).start()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
