"""``python -m bench.recovery`` (``make bench-recovery``): how fast a worker serves, from nothing and after a crash.

Starts the service as ``make run`` does (the launcher), with a compile cache of
its own that starts empty, and measures:

* **cold start**: the worker's start to its first heartbeat, every XLA program
  compiled (``sentiment_worker_startup_seconds``, and the programs compiled);
* **crash under load**: ``--clients`` clients send ``POST /predict`` in a loop
  (no back-off, as in the fault test); the worker is SIGKILLed; the launcher
  restarts it; the time from the kill to the first 200 of a request sent after
  the kill (only the new worker can answer it), and what the new worker's
  start-up took;
* **warm restart**: the same kill with no load.

One line per measurement, then the table the README shows.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.config import ROOT
from service.embedded_redis import free_port

POST_BODY = b'{"text": "A moving, beautifully acted film."}'


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def post(url: str) -> int:
    request = urllib.request.Request(url, data=POST_BODY, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_for(predicate, timeout_s: float, what: str):
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")


def worker_pid(launcher_pid: int) -> int | None:
    """The launcher's inference worker (a direct child running service.worker)."""
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"service.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    return None


def gauge(metrics: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return float(found[1]) if found else None


def read(metrics: str, first_200_s: float) -> tuple[float, float, float]:
    """(worker start-up seconds, ``first_200_s``, programs compiled) for the table."""
    return gauge(metrics, "sentiment_worker_startup_seconds"), first_200_s, gauge(metrics, "sentiment_worker_warmup_compiled_programs")


class Clients:
    """``n`` threads posting in a loop; (sent, answered, status) of each request, time.monotonic()."""

    def __init__(self, url: str, n: int):
        self.url, self.stop, self.timeline = url, threading.Event(), []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            status = post(self.url)
            self.timeline.append((sent, time.monotonic(), status))

    def first_200_sent_after(self, moment: float) -> float | None:
        return min((answered for sent, answered, status in list(self.timeline) if sent > moment and status == 200), default=None)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--clients", type=int, default=16, help="Clients sending requests while the worker is killed (default 16).")
    args = p.parse_args(argv)
    port, metrics_port = free_port(), free_port()
    cache = tempfile.mkdtemp(prefix="sentiment-xla-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_") and k != "TF_XLA_FLAGS"}
    env.update(PORT=str(port), SENTIMENT_COMPILE_CACHE_DIR=cache, SENTIMENT_WORKER_METRICS_PORT=str(metrics_port))
    env["SENTIMENT_LOG_LEVEL"] = "WARNING"
    base, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    launcher = subprocess.Popen([sys.executable, "-m", "service.launcher"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    rows = []

    def warmed_up_metrics(pid: int | None = None) -> str:
        """The metrics of the worker that replaced ``pid`` (or of the first one), once its whole warm-up is over."""

        def ready() -> str | None:
            current = worker_pid(launcher.pid)
            metrics = get(metrics_url)[1] if current and current != pid else ""
            compiled = gauge(metrics, "sentiment_worker_warmup_compiled_programs")
            return metrics if compiled is not None and compiled == compiled else None  # NaN until it is over

        return wait_for(ready, 600, "a worker's warm-up")

    try:
        started = time.monotonic()
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 600, "the service to be ready")
        ready_after = time.monotonic() - started
        metrics = warmed_up_metrics()  # explanations warm up once the worker serves: in the cache before the kill
        rows.append(("cold start (empty cache)", *read(metrics, ready_after)))

        pid = worker_pid(launcher.pid)
        with Clients(f"{base}/predict", args.clients) as clients:
            time.sleep(2)
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            back = wait_for(lambda: clients.first_200_sent_after(killed_at), 120, "a 200 after the kill")
        rows.append((f"crash under load ({args.clients} clients)", *read(warmed_up_metrics(pid), back - killed_at)))

        pid = worker_pid(launcher.pid)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: post(f"{base}/predict") == 200, 120, "a 200 after the kill")
        back = time.monotonic() - killed_at
        rows.append(("warm restart (no load)", *read(warmed_up_metrics(pid), back)))
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(30)
    table = ["| case | worker start-up (s) | to first 200 (s) | programs compiled |", "|---|---:|---:|---:|"]
    table += [f"| {case} | {startup:.1f} | {first:.1f} | {compiled:.0f} |" for case, startup, first, compiled in rows]
    sys.stdout.write("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
