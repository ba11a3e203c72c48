"""Start and stop the real processes the integration tests drive."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from service.config import ROOT
from service.embedded_redis import free_port

# Every worker the tests start compiles the same XLA programs at warm-up: they share the service's own persistent
# compile cache (SENTIMENT_COMPILE_CACHE_DIR), one per test run, so that only the first start of a graph pays for it.
COMPILE_CACHE = Path(tempfile.mkdtemp(prefix="sentiment-xla-"))


def settings_of(env: dict[str, str]) -> dict[str, str]:
    """The ``SENTIMENT_*`` variables of ``env`` as `Settings` field names (``SENTIMENT_MODEL_CONFIG`` is
    ``model_config_file``); a variable that is no setting keeps its lower-cased name, for the caller to catch."""
    from service.config import Settings

    fields = {
        (f.validation_alias if isinstance(f.validation_alias, str) else f"SENTIMENT_{name.upper()}"): name
        for name, f in Settings.model_fields.items()
    }
    return {fields.get(k, k.removeprefix("SENTIMENT_").lower()): v for k, v in env.items() if k.startswith("SENTIMENT_")}


def child_env(**settings: str) -> dict[str, str]:
    """The environment of a process the tests start: this one's, without any SENTIMENT_* setting or TensorFlow flag
    of its own, with the test run's compile cache and ``settings``."""
    drop = ("PROMETHEUS_MULTIPROC_DIR", "TF_XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_") and k not in drop}
    return {**env, "SENTIMENT_COMPILE_CACHE_DIR": str(COMPILE_CACHE), **settings}


@contextmanager
def frozen(process: subprocess.Popen) -> Iterator[None]:
    """SIGSTOP a process for the duration of the block (Redis still delivers to its blocked reads)."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def assert_standard_error(response: requests.Response, status: int, *fragments: str) -> str:
    """A TensorFlow Serving / Open Inference Protocol error: ``{"error": "<message>"}`` naming every fragment, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in response.text and response.headers.get("X-Request-ID")
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


def gunicorn_graceful_timeout() -> float:
    """``graceful_timeout`` of service/gunicorn_conf.py, read without importing it (it has side effects)."""
    tree = ast.parse((ROOT / "service" / "gunicorn_conf.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "graceful_timeout" for t in node.targets):
            return float(ast.literal_eval(node.value))
    raise AssertionError("graceful_timeout not found in service/gunicorn_conf.py")


def timed_predict(service: Service, payload: dict, headers: dict | None = None) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = service.predict(payload, headers=headers)
    return response, time.monotonic() - started


def answers_200(url: str, process: subprocess.Popen, log: Path | None = None) -> bool:
    """Whether ``url`` answers 200 yet, for `wait_until` while ``process`` boots; fails at once (with its log) if it exited."""
    if process.poll() is not None:
        raise AssertionError(f"{process.args[:3]} exited with {process.returncode}" + (f":\n{log.read_text()}" if log else ""))
    try:
        return requests.get(url, timeout=1).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # still booting (slowly, on a busy machine)
        return False


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05, what: str = "condition"):
    give_up_at = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up_at:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Service:
    """gunicorn API processes and inference workers on one Redis, configured by environment only."""

    redis_url: str
    model_store: Path
    settings: dict[str, str] = field(default_factory=dict)
    api_processes: int = 1
    port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        defaults = {
            "SENTIMENT_REDIS_URL": self.redis_url,
            "SENTIMENT_MODEL_STORE": str(self.model_store),
            "SENTIMENT_API_PROCESSES": str(self.api_processes),
            "SENTIMENT_API_CONCURRENCY": "16",
            "SENTIMENT_TF_THREADS": "1",
            "SENTIMENT_WORKER_METRICS_PORT": "0",
            "SENTIMENT_LOG_LEVEL": "WARNING",
            "PORT": str(self.port),
            "PYTHONPATH": str(ROOT),
        }
        return child_env(**{**defaults, **self.settings})

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a child with its output appended to ``<log_dir>/<log_name>.log`` (or dropped)."""
        if self.log_dir is None:
            return subprocess.Popen(command, env=env or self.env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        with open(self.log_dir / f"{log_name}.log", "ab") as log:
            return subprocess.Popen(command, env=env or self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def start_api(self) -> None:
        command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "gunicorn_conf.py"), "service.api.app:create_app()"]
        self.api = self._spawn(command, "api")
        wait_until(lambda: answers_200(f"{self.url}/healthz", self.api), 60, what="the API to answer /healthz")

    def start_worker(self, wait_ready: bool = True) -> subprocess.Popen:
        index = len(self.workers)
        worker = self._spawn([sys.executable, "-m", "service.worker"], f"worker{index}")
        self.workers.append(worker)
        if wait_ready:
            self.wait_workers(sum(1 for w in self.workers if w.poll() is None))
        return worker

    def wait_workers(self, count: int, timeout_s: float = 180) -> None:
        def enough() -> bool:
            for worker in self.workers:
                if worker.poll() is not None and worker.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                    raise AssertionError(f"worker exited with {worker.returncode}")
            body = requests.get(f"{self.url}/readyz", timeout=2).json()
            return body["checks"].get("workers", 0) >= count

        wait_until(enough, timeout_s, interval_s=0.2, what=f"{count} live worker(s)")

    def predict(self, payload, headers: dict | None = None, timeout: float = 10) -> requests.Response:
        return requests.post(f"{self.url}/predict", json=payload, headers=headers, timeout=timeout)

    @contextmanager
    def running(self, workers: int = 1) -> Iterator[Service]:
        """The API and ``workers`` inference workers, stopped at the end of the block."""
        try:
            self.start_api()
            for _ in range(workers):
                self.start_worker()
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
