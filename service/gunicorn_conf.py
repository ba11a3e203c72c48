"""gunicorn settings for the API, derived from the same ``SENTIMENT_*`` settings.

``gthread`` workers: each request thread spends most of its life blocked on
Redis (BLPOP) waiting for its result, which threads do cheaply; CPU work
(JSON, tokenizing) is short.
"""

import os
import tempfile

# prometheus-client's multiprocess mode: every process writes its metrics here.
# Set before prometheus_client is imported anywhere: it picks its mode at import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sentiment-metrics-")

from gunicorn import glogging
from prometheus_client import multiprocess

from service.config import load_settings
from service.logs import formatter

_settings = load_settings()

bind = f"{_settings.host}:{os.environ.get('PORT', '8000')}"
workers = _settings.api_processes
worker_class = "gthread"
threads = _settings.api_threads
backlog = 2048
keepalive = 5
timeout = 30
graceful_timeout = 5
control_socket_disable = True  # one gunicorn per port, no shared ~/.gunicorn socket
accesslog = None  # the app writes its own access log line (service/hooks.py), with the request id and scoring fields
errorlog = "-"
loglevel = _settings.log_level.lower()


class ServiceLogger(glogging.Logger):
    """gunicorn's own messages in the service's format (``SENTIMENT_LOG_FORMAT``).

    A ``logconfig_dict`` would do it too, but it also turns gunicorn's access log
    on, which costs every request; the app writes its own access line instead.
    """

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(_settings.log_format))


logger_class = ServiceLogger


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
