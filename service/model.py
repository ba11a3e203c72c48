"""The one serving module that imports TensorFlow: load a SavedModel, run token ids through it.

Only inference workers import this; the API processes never load TensorFlow.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from service.model_store import ModelVersion

log = logging.getLogger(__name__)


def configure_devices(intra_op_threads: int = 0) -> str:
    """Let GPU memory grow as needed (so several processes can share a card) and name the device used."""
    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    device = gpus[0].name if gpus else "CPU"
    log.info("TensorFlow %s running on %s", tf.__version__, device)
    return device


class SentimentModel:
    """The ``serving_default`` signature of one exported version."""

    def __init__(self, version: ModelVersion):
        self.version = version
        loaded = tf.saved_model.load(str(version.path))
        self._loaded = loaded  # keeps the variables alive
        self._serve = loaded.signatures["serving_default"]
        self.vocab_size = int(version.metadata.get("vocab_size") or version.load_tokenizer().vocab_size)

    def predict(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities of positive, one per sequence; the batch is padded to its own longest."""
        width = max(len(s) for s in sequences)
        ids = np.zeros((len(sequences), width), dtype=np.int32)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
        return self._serve(token_ids=tf.constant(ids))["probability"].numpy()

    def warm_up(self) -> None:
        """The first calls trace and optimise the graph; pay for that before taking traffic."""
        for batch, width in ((1, 8), (8, 64), (32, 256)):
            self.predict([[2] * width] * batch)

    def measure_step_overhead(self, width: int = 64, big: int = 64, repeats: int = 5) -> float:
        """A call costs about ``width × (a + b × texts)``; return ``a / b``, the fixed cost of a
        step in texts' worth of work, which decides when splitting a batch by length pays."""

        def seconds(batch: int) -> float:
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                self.predict([[2] * width] * batch)
                runs.append(time.perf_counter() - started)
            return statistics.median(runs)

        one, many = seconds(1), seconds(big)
        per_text = max((many - one) / (big - 1), 1e-9)
        return max(one - per_text, 0.0) / per_text
