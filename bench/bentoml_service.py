"""``make bench PEERS=bentoml``: the serving framework a user would pick instead, serving the same SavedModel.

BentoML 1.4 with adaptive batching (requests merged into batches of up to 128
texts) and 2 worker processes (one per core here), calling the artifact's own
``predict_text`` signature: text in, probability out, tokenizer included. Run
by the benchmark from its own virtualenv (``bench/requirements-bentoml.txt``)::

    SENTIMENT_BENCH_MODEL=model_store/sentiment/3 .venv-bentoml/bin/bentoml serve bench.bentoml_service:Sentiment
"""

from __future__ import annotations

import os

import bentoml

MODEL_PATH = os.environ.get("SENTIMENT_BENCH_MODEL", "model_store/sentiment/3")


@bentoml.service(workers=2, traffic={"timeout": 10})
class Sentiment:
    def __init__(self) -> None:
        import tensorflow as tf

        self.tf = tf
        self.predict_text = tf.saved_model.load(MODEL_PATH).signatures["predict_text"]

    @bentoml.api(batchable=True, max_batch_size=128, max_latency_ms=2000)
    def predict(self, texts: list[str]) -> list[float]:
        return self.predict_text(texts=self.tf.constant(texts))["probability"].numpy().tolist()
