"""gunicorn settings for the API, derived from the same ``SENTIMENT_*`` settings.

``gevent`` workers by default: a request spends most of its life waiting for
its result (`service.results`), which a greenlet does without an OS thread;
measured with a model call that costs nothing, the API path costs a quarter
less CPU per request than with ``gthread`` threads, and answers a third more
requests a second (README, Speed). ``SENTIMENT_API_WORKER_CLASS=gthread``
keeps OS threads.
"""

import os
import tempfile

from service.config import load_settings

_settings = load_settings()
if refusal := _settings.anonymous_public_bind():  # gunicorn exits with this message and status 1
    raise SystemExit(refusal)

# prometheus-client's multiprocess mode: every process writes its metrics here.
# Set before prometheus_client is imported anywhere: it picks its mode at import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sentiment-metrics-")

from gunicorn import glogging  # noqa: E402 - after PROMETHEUS_MULTIPROC_DIR is set

from service.logs import formatter  # noqa: E402

bind = f"{_settings.host}:{os.environ.get('PORT', '8000')}"
workers = _settings.api_processes
worker_class = _settings.api_worker_class
threads = _settings.api_concurrency  # gthread; under gevent the app bounds its requests (service/api/concurrency.py)
worker_connections = _settings.api_connections  # open connections, idle keep-alive included
backlog = 2048
keepalive = 5
timeout = 30
graceful_timeout = 5
control_socket_disable = True  # one gunicorn per port, no shared ~/.gunicorn socket
accesslog = None  # the app writes its own access log line (service/api/hooks.py), with the request id and scoring fields
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
    # Imported here: the master must not import ssl (prometheus-client's exposition does) before gevent's workers
    # patch it after the fork.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
