"""The HTTP ceiling of this machine, for ``make bench``: Flask under gunicorn (same settings as the service's
API), answering ``POST /predict`` with a JSON body of the same shape as the service's, without tokenizing,
queueing or scoring.

    gunicorn -c service/gunicorn_conf.py 'bench.echo_app:create_app()'
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/predict")
    def echo() -> Response:
        payload = orjson.loads(request.get_data(cache=False))
        texts = [payload["text"]] if "text" in payload else payload["texts"]
        predictions = [{"label": "positive", "score": 0.5, "truncated": False, "tokens": len(t)} for t in texts]
        return Response(orjson.dumps({"predictions": predictions}), mimetype="application/json")

    return app
