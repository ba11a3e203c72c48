"""The design this service is measured against: one Flask app under gunicorn that
tokenizes and calls the model once per request, in the request's own process.

    gunicorn 'bench.naive_app:create_app()'
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flask import Flask, jsonify, request

from service.config import ROOT
from service.model_store import resolve


def create_app() -> Flask:
    from service.model import SentimentModel

    version = resolve(ROOT / "model_store" / "sentiment")
    model = SentimentModel(version)
    model.warm_up()
    tokenizer = version.load_tokenizer()
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        payload = request.get_json()
        texts = [payload["text"]] if "text" in payload else payload["texts"]
        encoded = tokenizer.encode_batch(texts)
        scores = model.predict([e.ids for e in encoded])
        return jsonify(predictions=[{"label": "positive" if s >= 0.5 else "negative", "score": float(s)} for s in scores])

    return app
