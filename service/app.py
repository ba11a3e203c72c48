"""Flask application factory: settings, the served model's tokenizer, Redis, error handlers.

Served by gunicorn (``service/gunicorn_conf.py``)::

    gunicorn -c service/gunicorn_conf.py 'service.app:create_app()'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from service import api
from service.api import error_response
from service.config import Settings, load_settings
from service.errors import ServiceError
from service.logs import configure_logging
from service.model_store import ModelVersion, resolve
from service.queue import RequestQueue, connect
from service.tokenizer import Tokenizer

log = logging.getLogger("service.app")


@dataclass
class Resources:
    """What the routes need, built once per process."""

    settings: Settings
    model: ModelVersion
    tokenizer: Tokenizer
    queue: RequestQueue
    results: RequestQueue  # same protocol on a client whose socket timeout outlasts the longest BLPOP
    workers_alive: bool = True
    workers_checked_at: float = 0.0


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    if not settings.redis_url:
        raise SystemExit("SENTIMENT_REDIS_URL is not set (`make run` starts a Redis and sets it)")
    version = resolve(settings.model_dir, settings.model_version)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    connection = connect(settings.redis_url, settings.redis_timeout_s)
    waiting = connect(settings.redis_url, settings.redis_timeout_s, blocking_s=settings.default_deadline_ms / 1000)
    app.extensions["sentiment"] = Resources(
        settings=settings,
        model=version,
        tokenizer=version.load_tokenizer(),
        queue=RequestQueue(connection, settings.redis_key_prefix, version.name, version.version),
        results=RequestQueue(waiting, settings.redis_key_prefix, version.name, version.version),
    )
    app.register_blueprint(api.bp)

    @app.errorhandler(ServiceError)
    def handle_service_error(exc: ServiceError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; the request id is in the response headers")

    log.info("API serving %s v%s (vocabulary of %d)", version.name, version.version, app.extensions["sentiment"].tokenizer.vocab_size)
    return app
