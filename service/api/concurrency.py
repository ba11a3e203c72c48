"""At most ``SENTIMENT_API_CONCURRENCY`` requests in service per API process, counted apart from open connections.

gunicorn counts a connection against its ``worker_connections`` for as long as it
is open, idle keep-alive included. Were that the request limit, callers' pooled
keep-alive connections would take the places of requests: a new caller would
wait, accepted by no one, until an idle connection timed out (gunicorn's
``keepalive``, 5 s). So the connection limit is a setting of its own
(``SENTIMENT_API_CONNECTIONS``), and requests are bounded here, around the
application: under gevent a greenlet waits for a slot without an OS thread.

The probes and the metrics (the paths given as uncounted: the health blueprint's)
take no slot: a saturated process still answers its orchestrator and its
scraper, instead of being restarted for being busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


class ConcurrencyLimit:
    """WSGI middleware: a request holds one of ``limit`` slots from its start to its answer's return.

    `threading.BoundedSemaphore` is gevent's own once gunicorn's gevent worker has patched the standard library,
    so the wait is cooperative there, and an OS-level wait under gthread (whose thread count is the same limit,
    so it never waits).
    """

    def __init__(self, app: WSGIApp, limit: int, uncounted_paths: Iterable[str] = ()):
        if limit < 1:
            raise ValueError(f"a concurrency limit is at least 1, not {limit}")
        self.app = app
        self.uncounted_paths = frozenset(uncounted_paths)
        self._slots = threading.BoundedSemaphore(limit)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self.uncounted_paths:
            return self.app(environ, start_response)
        with self._slots:
            return self.app(environ, start_response)
