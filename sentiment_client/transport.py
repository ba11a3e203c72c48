"""One HTTP exchange at a time over kept-alive connections (``http.client``, standard library only).

``urllib.request`` opens a new TCP connection for every request; a service that
calls the API all day pays a handshake (and, over TLS, a key exchange) per
prediction for that. Here idle connections wait in a small pool shared by all
threads: a thread takes one (or opens one), makes one exchange, and gives it
back if the server kept it open. A connection is never used by two threads at
once, so ``http.client``'s lack of thread safety does not matter.

A server may close an idle connection at any moment (gunicorn after 5 s), and
the client only learns it when its next request fails before any answer. That
failure on a reused connection is retried once on a fresh one, at once, without
counting as a retry: the request never reached the application.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_IDLE = 16
_STALE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)  # http.client.RemoteDisconnected is a ConnectionResetError


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: http.client.HTTPMessage


class Transport:
    """Requests to one base URL (``http://host:port/prefix``) over a pool of kept-alive connections. Thread-safe."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the service URL must look like http://host:port or https://host, not {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"the service URL takes no query or fragment: {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        """One exchange; raises ``OSError`` (``TimeoutError`` included) or ``http.client.HTTPException`` when no answer comes."""
        connection, reused = self._take(timeout)
        try:
            return self._exchange(connection, method, path, body, headers)
        except _STALE:
            if not reused:
                raise
        return self._exchange(self._open(timeout), method, path, body, headers)

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when their exchange ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _exchange(self, connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        try:
            connection.request(method, self._prefix + path, body=body, headers=headers)
            answer = connection.getresponse()
            response = Response(answer.status, answer.read(), answer.headers)
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return response

    def _take(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            return self._open(timeout), False
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection, True

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()
