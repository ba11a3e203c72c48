"""training.download.fetch against a loopback HTTP mirror that can misbehave on purpose.

The mirror serves a small IMDB-layout archive, honours ``Range: bytes=N-`` (206), and can
be switched to ignore Range (200), cut the connection after K bytes, or answer 404.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.synthetic import write_imdb_archive
from training.data import DataError, load
from training.download import fetch

NAME = "aclImdb_v1.tar.gz"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@dataclass
class Mirror:
    """What the loopback server serves, how it misbehaves, and what it was asked for."""

    body: bytes
    base_url: str = ""
    mode: str = "ok"  # "ok" | "ignore-range" | "cut" | "404"
    cut_after: int = 0  # with mode "cut": body bytes sent before the connection is closed
    ranges: list[str | None] = field(default_factory=list)  # the Range header of each request (None: absent)

    @property
    def requests(self) -> int:
        return len(self.ranges)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def url(self, name: str = NAME) -> str:
        return f"{self.base_url}/files/{name}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mirror: Mirror


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        mirror = self.server.mirror
        range_header = self.headers.get("Range")
        mirror.ranges.append(range_header)
        if mirror.mode == "404":
            self.send_error(404, "Not Found")
            return
        body, start = mirror.body, 0
        if range_header is not None and mirror.mode != "ignore-range":
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            if match is None:
                self.send_error(400, "unsupported Range")
                return
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(payload)))  # the full length, even when the connection is cut
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if mirror.mode == "cut":
            payload = payload[: mirror.cut_after]
            self.close_connection = True
        self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_imdb_archive(tmp_path_factory.mktemp("origin"), per_class=5).read_bytes()


@pytest.fixture
def mirror(archive: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A fresh loopback server on a free port per test (no proxy may intercept it)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.mirror = Mirror(archive, base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "nested"  # fetch creates it


def part_of(cache: Path) -> Path:
    return cache / f"{NAME}.part"


def test_fresh_download_is_verified_cached_and_not_fetched_again(mirror: Mirror, cache: Path) -> None:
    path = fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert path == cache / NAME
    assert path.read_bytes() == mirror.body
    assert hashlib.sha256(path.read_bytes()).hexdigest() == mirror.sha256
    assert not part_of(cache).exists()
    assert mirror.ranges == [None]  # one plain request, no Range
    assert fetch(mirror.url(), mirror.sha256, cache, timeout=5) == path
    assert mirror.requests == 1  # the second call used the cache
    assert sorted(p.name for p in cache.iterdir()) == [NAME]


def test_interrupted_download_keeps_the_part_and_resumes_with_range(mirror: Mirror, cache: Path) -> None:
    cut = len(mirror.body) // 3
    mirror.mode, mirror.cut_after = "cut", cut
    with pytest.raises(DataError, match=re.escape(mirror.url())):
        fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert not (cache / NAME).exists()
    assert part_of(cache).read_bytes() == mirror.body[:cut]

    mirror.mode = "ok"
    path = fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert mirror.ranges == [None, f"bytes={cut}-"]
    assert path.read_bytes() == mirror.body
    assert not part_of(cache).exists()


def test_download_resumes_across_several_interruptions(mirror: Mirror, cache: Path) -> None:
    step = len(mirror.body) // 4
    mirror.mode, mirror.cut_after = "cut", step
    for done in (step, 2 * step):
        with pytest.raises(DataError):
            fetch(mirror.url(), mirror.sha256, cache, timeout=5)
        assert part_of(cache).read_bytes() == mirror.body[:done]
    mirror.mode = "ok"
    assert fetch(mirror.url(), mirror.sha256, cache, timeout=5).read_bytes() == mirror.body
    assert mirror.ranges == [None, f"bytes={step}-", f"bytes={2 * step}-"]


def test_server_ignoring_range_restarts_from_zero(mirror: Mirror, cache: Path) -> None:
    cache.mkdir(parents=True)
    offset = len(mirror.body) // 2
    part_of(cache).write_bytes(b"\0" * offset)  # a stale part: appending to it would corrupt the result
    mirror.mode = "ignore-range"
    path = fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert mirror.ranges == [f"bytes={offset}-"]
    assert path.read_bytes() == mirror.body
    assert not part_of(cache).exists()


def test_complete_part_is_checked_and_kept_when_the_server_answers_416(mirror: Mirror, cache: Path) -> None:
    cache.mkdir(parents=True)
    part_of(cache).write_bytes(mirror.body)
    path = fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert mirror.ranges == [f"bytes={len(mirror.body)}-"]
    assert path.read_bytes() == mirror.body
    assert not part_of(cache).exists()


def test_sha256_mismatch_leaves_nothing_behind(mirror: Mirror, cache: Path) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DataError, match=r"SHA-256 mismatch") as error:
        fetch(mirror.url(), wrong, cache, timeout=5)
    assert mirror.sha256 in str(error.value) and wrong in str(error.value)
    assert not (cache / NAME).exists()
    assert not part_of(cache).exists()


def test_existing_file_with_wrong_content_is_replaced(mirror: Mirror, cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / NAME).write_bytes(b"corrupt leftover")
    path = fetch(mirror.url(), mirror.sha256, cache, timeout=5)
    assert path.read_bytes() == mirror.body
    assert mirror.ranges == [None]
    assert not part_of(cache).exists()


def test_http_404_names_the_url(mirror: Mirror, cache: Path) -> None:
    mirror.mode = "404"
    url = mirror.url("missing.tar.gz")
    with pytest.raises(DataError, match="^" + re.escape(url) + r": download failed: HTTP 404"):
        fetch(url, mirror.sha256, cache, timeout=5)
    assert list(cache.iterdir()) == []


def test_unreachable_server_is_a_data_error(mirror: Mirror, cache: Path) -> None:
    """Nothing listens on the port once the mirror is shut down; the error says how to resume."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}/files/{NAME}"
        with pytest.raises(DataError, match="^" + re.escape(url) + r": download failed .*run again to resume"):
            fetch(url, mirror.sha256, cache, timeout=5)


def test_downloaded_archive_loads_as_imdb(mirror: Mirror, cache: Path) -> None:
    splits = load(fetch(mirror.url(), mirror.sha256, cache, timeout=5))
    for split in ("train", "test"):
        assert len(splits[split]) == 10
        assert splits[split].labels == [0] * 5 + [1] * 5
