"""Flask application factory: settings, the model config and its router (a `Scorer` per served version), the blueprints.

Served by gunicorn (``service/gunicorn_conf.py``)::

    gunicorn -c service/gunicorn_conf.py 'service.api.app:create_app()'

gunicorn calls this in each of its worker processes (after the fork), so each
process gets its own Redis connections and its own result listener thread.
"""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from service.api import auth, demo, docs, health, hooks, openapi, protocols
from service.api.concurrency import ConcurrencyLimit
from service.api.responses import error_response
from service.config import Settings, load_settings
from service.errors import ServiceError
from service.logs import configure_logging
from service.model_config import ConfigError, ConfigWatcher, describe, load_config
from service.model_store import ModelVersion
from service.queue import RequestQueue, connect
from service.results import ResultListener
from service.routing import ModelRouter
from service.scoring import Scorer, serving_tokenizer

log = logging.getLogger("service.app")

BLUEPRINTS = (*protocols.BLUEPRINTS, health.bp, openapi.bp, docs.bp, demo.bp)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.redis_url:
        raise SystemExit("SENTIMENT_REDIS_URL is not set (`make run` starts a Redis and sets it)")
    try:
        config = load_config(settings)
    except ConfigError as exc:
        raise SystemExit(f"SENTIMENT_MODEL_CONFIG: {exc}") from None

    app = Flask(__name__, static_folder=None)  # static files are the demo blueprint's (service/api/static)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # No CORS here, so no route needs OPTIONS; Flask's automatic answer would be a 200 for any URL a rule matches,
    # whatever its parameters name (a model that does not exist, a path that climbs): 405 instead, like any other method.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    connection = connect(settings.redis_url, settings.redis_timeout_s)
    prefix = settings.redis_key_prefix

    def queue_of(name: str, version: int) -> RequestQueue:
        return RequestQueue(connection, prefix, name, version)

    listen_s = 1.0
    default = config.models[config.default_model]
    listener = ResultListener(
        queue_of(default.name, default.default), connect(settings.redis_url, settings.redis_timeout_s, blocking_s=listen_s), listen_s
    )
    listener.start()

    def make_scorer(version: ModelVersion) -> Scorer:
        return Scorer(settings, version, queue_of(version.name, version.version), listener, serving_tokenizer(version, settings))

    router = ModelRouter(settings, config, make_scorer, lambda name, v: queue_of(name, v).live_workers(settings.heartbeat_ttl_s), listener)
    app.extensions["sentiment"] = router
    ConfigWatcher(settings, config, router.apply).start()
    hooks.install(app)
    auth.install(app, settings, connection)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

    @app.errorhandler(ServiceError)
    def handle_service_error(exc: ServiceError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response:
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(exc.code or 500, hooks.error_code(exc), exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; the request id is in the response headers")

    probes = [rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith(f"{health.bp.name}.")]
    app.wsgi_app = ConcurrencyLimit(app.wsgi_app, settings.api_concurrency, uncounted_paths=probes)
    log.info("API serving %s", describe(config), extra={"reply_to": listener.reply_to})
    return app
