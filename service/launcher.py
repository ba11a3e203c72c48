"""What ``make run`` starts: Redis (embedded, unless one is configured), the
inference worker(s) and the API under gunicorn, supervised.

A child that exits is started again after a back-off (1 s, doubling up to 30 s,
back to 1 s once it has stayed up for a minute). SIGTERM or Ctrl-C stops the
API first (no new requests), then the workers (each finishes its batch), then
Redis, each within a few seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from service.config import ROOT, Settings, load_settings
from service.embedded_redis import EmbeddedRedis, die_with_parent
from service.logs import configure_logging
from service.model_config import ConfigError, describe, load_config
from service.model_store import ModelNotFound

log = logging.getLogger("service.launcher")

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
STOP_TIMEOUT_S = 8.0


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff_s: float = MIN_BACKOFF_S
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT, start_new_session=True, preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def check(self, now: float) -> None:
        """Start again a child that exited, once its back-off has passed."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        if now - self.started_at >= STABLE_AFTER_S:
            self.backoff_s = MIN_BACKOFF_S
        log.warning("%s exited with status %s; restarting in %.0fs", self.name, self.process.returncode, self.backoff_s)
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, until: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(until - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", self.name)
            self.process.kill()
            self.process.wait()


class Launcher:
    def __init__(self, settings: Settings, port: int):
        self.settings = settings
        self.port = port
        self.redis: EmbeddedRedis | None = None
        self.stopping = False
        self.api: list[Child] = []
        self.workers: list[Child] = []

    def request_stop(self, signum: int, _frame) -> None:
        if not self.stopping:
            log.info("%s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        config = load_config(self.settings)  # fail now, not in every child
        redis_url = self.settings.redis_url
        if not redis_url:
            self.redis = EmbeddedRedis().start()
            redis_url = self.redis.url
        env = {**os.environ, "SENTIMENT_REDIS_URL": redis_url}
        if not self.settings.model_config_file:  # the version found now, for every child, even if a newer one lands
            env["SENTIMENT_MODEL_VERSION"] = str(config.models[self.settings.model_name].default)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for index in range(self.settings.inference_workers):
            worker_env = dict(env)
            if self.settings.worker_metrics_port:
                port = self.settings.worker_metrics_port + index
                worker_env["SENTIMENT_WORKER_METRICS_PORT"] = str(port)
                log.info("inference worker %d: metrics on http://%s:%d/metrics", index, self.settings.host, port)
            if self.settings.inference_workers > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
                worker_env["CUDA_VISIBLE_DEVICES"] = str(index)  # one worker per GPU
            self.workers.append(Child(f"inference worker {index}", [sys.executable, "-m", "service.worker"], worker_env))
        gunicorn_conf = str(Path(__file__).with_name("gunicorn_conf.py"))
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", gunicorn_conf, "service.api.app:create_app()"]
        self.api.append(Child("API (gunicorn)", gunicorn, {**env, "PORT": str(self.port)}))
        for child in (*self.workers, *self.api):
            child.start()
        self.supervise(describe(config))
        self.shutdown()
        return 0

    def supervise(self, serving: str) -> None:
        announced = False
        next_probe = 0.0
        while not self.stopping:
            now = time.monotonic()
            if self.redis is not None and not self.redis.alive():
                log.warning("embedded Redis exited; starting it again on port %d", self.redis.port)
                self.redis.start()
            for child in (*self.workers, *self.api):
                child.check(now)
            if not announced and now >= next_probe:
                next_probe = now + 0.5
                announced = self._ready()
                if announced:
                    log.info("ready: %s at http://%s:%d/predict", serving, self.settings.host, self.port)
            time.sleep(0.2)

    def _ready(self) -> bool:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host
        try:
            with urllib.request.urlopen(f"http://{host}:{self.port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def shutdown(self) -> None:
        for group in (self.api, self.workers):
            for child in group:
                child.terminate()
            until = time.monotonic() + STOP_TIMEOUT_S
            for child in group:
                child.wait(until)
        if self.redis is not None:
            self.redis.cleanup()
        log.info("stopped")


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if refusal := settings.anonymous_public_bind():
        sys.exit(f"error: {refusal}")
    try:
        port = int(os.environ.get("PORT", "8000"))
    except ValueError:
        sys.exit(f"PORT must be a number, got {os.environ['PORT']!r}")
    try:
        return Launcher(settings, port).run()
    except ModelNotFound as exc:
        sys.exit(f"error: {exc}")
    except ConfigError as exc:
        sys.exit(f"error: SENTIMENT_MODEL_CONFIG: {exc}")


if __name__ == "__main__":
    sys.exit(main())
