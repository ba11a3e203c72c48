"""``python -m service.worker``: an inference worker. Run one per GPU (one on a CPU machine).

Start-up, in order: settings and the model config; the compile cache (before
TensorFlow reads its flags); TensorFlow; every version the config wants of
this worker, each loaded and warmed before the first heartbeat (its programs
compiled, or loaded from the cache), so that no request waits for a compile;
the metrics server; then the loop (`service.worker.loop`). On a warm cache the
explanation programs load beside the loop instead, so that a restarted worker
serves a few seconds sooner. Versions the config adds later load beside the
loop (`service.worker.versions`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time

from service import metrics
from service.config import Settings, load_settings
from service.logs import capture_native_stderr, configure_logging
from service.model_config import ConfigError, ConfigWatcher, load_config
from service.model_store import ModelVersion
from service.queue import RequestQueue, connect
from service.worker import compile_cache
from service.worker.loop import InferenceWorker
from service.worker.versions import VersionLoader, wanted_versions

log = logging.getLogger("service.worker")


def tensorflow_loader(settings: Settings, device: str, cache):
    """``load(version) -> (model, step overhead)``: a SentimentModel, warmed so that no request waits for a compile."""
    from service.worker.model import SentimentModel  # TensorFlow

    def load(version: ModelVersion):
        cached = compile_cache.entries(cache)
        model = SentimentModel(version, device)
        metrics.WARMUP_SECONDS.set(model.warm_up(settings.max_batch_size))

        def warm_up_explanations() -> None:
            model.warm_up(settings.max_batch_size, explain=True)
            compiled = compile_cache.entries(cache) - cached
            metrics.WARMUP_COMPILED.set(compiled)
            log.info("compile cache %s: %d program(s) compiled, the others loaded", cache or "off", compiled)

        # Explanations have programs of their own, half the total. When the cache had the prediction programs, it
        # has theirs too: they load beside the serving loop (an explain request that comes first waits ~0.1 s for its
        # own, a load, not a compile). Otherwise they compile now, so that no request waits for a compile.
        if cache is not None and compile_cache.entries(cache) == cached:
            threading.Thread(target=warm_up_explanations, name="warm-up", daemon=True).start()
        else:
            warm_up_explanations()
        overhead = settings.step_overhead_texts
        if overhead is None:
            overhead = model.measure_step_overhead()
            log.info("%s v%s: one model step costs as much as %.1f texts", version.name, version.version, overhead)
        return model, overhead

    return load


def main() -> int:
    started = time.monotonic()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    capture_native_stderr()  # TensorFlow's own lines too, in the same format, its harmless "errors" at DEBUG
    if not settings.redis_url:
        sys.exit("SENTIMENT_REDIS_URL is not set (`make run` starts a Redis and sets it)")
    try:
        config = load_config(settings)
    except ConfigError as exc:
        sys.exit(f"SENTIMENT_MODEL_CONFIG: {exc}")
    cache = compile_cache.configure(settings.compile_cache_dir)  # before TensorFlow reads its flags
    metrics.WARMUP_COMPILED.set(float("nan"))  # until the whole warm-up is over
    from service.worker.model import configure_devices  # TensorFlow

    device = configure_devices(settings.tf_threads)
    connection = connect(settings.redis_url, settings.redis_timeout_s, blocking_s=settings.heartbeat_interval_s)
    prefix = settings.redis_key_prefix
    loader = VersionLoader(settings, tensorflow_loader(settings, device, cache), lambda name, v: RequestQueue(connection, prefix, name, v))
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    worker = InferenceWorker(settings, consumer, device, loader)
    loader.wanted = wanted_versions(config, settings)
    if not loader.wanted:
        sys.exit(f"SENTIMENT_WORKER_MODELS={settings.worker_models!r} matches no version the model config serves")
    for key in loader.wanted:  # before the first heartbeat: what this worker serves from its start
        worker.add(loader.slot(key))
    if settings.worker_metrics_port:
        served = [(*key, slot.runner.model.version.metadata.get("tokenizer", {}).get("scheme", "")) for key, slot in worker.slots.items()]
        try:
            metrics.serve_worker_metrics(
                settings.host, settings.worker_metrics_port, metrics.info_gauges(served, {"consumer": consumer, "device": device})
            )
            log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
        except OSError as exc:  # a busy port must not stop scoring: say so loudly instead
            log.error("worker metrics NOT served: port %d: %s", settings.worker_metrics_port, exc)
    ConfigWatcher(settings, config, loader.update).start()
    worker.install_signal_handlers()
    metrics.STARTUP_SECONDS.set(time.monotonic() - started)  # the loop's first turn heartbeats at once
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
