"""`make run`'s launcher: embedded Redis, supervision with restarts, clean stop; settings validation."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from service.config import ROOT
from service.embedded_redis import free_port
from tests.helpers import answers_200, child_env, wait_until

pytestmark = pytest.mark.slow  # The launcher starts everything `make run` does: end to end.


def launcher_env(model_store, **extra: str) -> dict[str, str]:
    return child_env(SENTIMENT_MODEL_STORE=str(model_store), SENTIMENT_API_PROCESSES="1", SENTIMENT_TF_THREADS="1", **extra)


def children(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def worker_processes(process: subprocess.Popen) -> list[psutil.Process]:
    found = []
    for child in children(process):
        try:
            if "service.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_launcher_runs_heals_and_stops_cleanly(tiny_model_store, tmp_path):
    port = free_port()
    env = launcher_env(tiny_model_store, PORT=str(port))
    with open(tmp_path / "launcher.log", "wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "service.launcher"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = functools.partial(answers_200, f"{url}/readyz", launcher, tmp_path / "launcher.log")
        wait_until(ready, 120, interval_s=0.3, what="the launched service to be ready")
        response = requests.post(f"{url}/predict", json={"text": "great superb film"}, timeout=10)
        assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "positive"
        names = " ".join(" ".join(c.cmdline()) for c in children(launcher))
        assert "redis-server" in names and "gunicorn" in names and "service.worker" in names

        # A crashed worker is restarted and the service heals without help.
        [worker] = worker_processes(launcher)
        worker.kill()
        wait_until(lambda: [w for w in worker_processes(launcher) if w.pid != worker.pid], 30, what="a restarted worker")
        wait_until(ready, 90, interval_s=0.3, what="readiness after the restart")
        wait_until(
            lambda: requests.post(f"{url}/predict", json={"text": "awful"}, timeout=10).status_code == 200, 30, what="predictions again"
        )
        assert "restarting in 1s" in (tmp_path / "launcher.log").read_text()

        # SIGTERM stops everything it started, within a few seconds.
        started_children = children(launcher)
        stop_sent = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(15) == 0
        _, alive = psutil.wait_procs(started_children, timeout=5)
        assert not alive, [p.cmdline() for p in alive]
        assert time.monotonic() - stop_sent < 10
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_bad_settings_stop_the_start_with_a_clear_message(tiny_model_store):
    cases = {
        "SENTIMENT_MAX_BATCH_SIZE": ("lots", "SENTIMENT_MAX_BATCH_SIZE"),
        "SENTIMENT_REDIS_URL": ("http://localhost", "SENTIMENT_REDIS_URL"),
        "SENTIMENT_DEFAULT_DEADLINE_MS": ("0", "SENTIMENT_DEFAULT_DEADLINE_MS"),
        "SENTIMENT_HEARTBEAT_TTL_S": ("0.5", "heartbeat_ttl_s must be longer"),
    }
    for variable, (value, expected) in cases.items():
        env = launcher_env(tiny_model_store, **{variable: value})
        result = subprocess.run([sys.executable, "-m", "service.launcher"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0, variable
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    env = launcher_env(tmp_path)
    result = subprocess.run([sys.executable, "-m", "service.launcher"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no model version under" in result.stderr and "Traceback" not in result.stderr
