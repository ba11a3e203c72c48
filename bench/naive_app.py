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
from service.tokenizer import combine


def create_app() -> Flask:
    from service.config import load_settings
    from service.worker.model import SentimentModel, configure_devices

    # The same graph, warm-up and TensorFlow threads as the service's worker: only the design differs.
    version = resolve(ROOT / "model_store" / "sentiment")
    model = SentimentModel(version, configure_devices(load_settings().tf_threads))
    model.warm_up()
    tokenizer = version.load_tokenizer()
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        payload = request.get_json()
        texts = [payload["text"]] if "text" in payload else payload["texts"]
        encoded = tokenizer.encode_batch(texts)
        windows = model.predict([window for e in encoded for window in e.windows])  # long texts read as the service reads them
        scores, start = [], 0
        for e in encoded:
            lengths = [len(w) for w in e.windows]
            scores.append(combine(windows[start : start + len(lengths)].tolist(), lengths, tokenizer.long_texts.aggregate))
            start += len(lengths)
        return jsonify(predictions=[{"label": "positive" if s >= 0.5 else "negative", "score": s} for s in scores])

    return app
