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


def _padded(sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-padded int32 ids ``[len(sequences), longest]``."""
    ids = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    return ids


class SentimentModel:
    """One signature of one exported version, chosen for the device: ``serving_gpu`` on a GPU, else ``serving_default``.

    Versions exported before ``metadata.json`` had a ``serving`` entry have
    ``serving_default`` alone, which runs anywhere.
    """

    def __init__(self, version: ModelVersion, device: str | None = None):
        self.version = version
        loaded = tf.saved_model.load(str(version.path))
        self._loaded = loaded  # keeps the variables alive
        serving = version.metadata.get("serving", {})
        signatures = serving.get("signatures", {})
        on_gpu = bool(tf.config.list_logical_devices("GPU")) if device is None else "GPU" in device.upper()
        gpu_signature = signatures.get("gpu")
        self.signature = gpu_signature if on_gpu and gpu_signature in loaded.signatures else signatures.get("cpu", "serving_default")
        self._serve = loaded.signatures[self.signature]
        # Explanations: the additive split of the logit over tokens, from the same loop (versions that have it).
        self._explain = loaded.signatures.get(serving.get("explain_signature", "explain"))
        # Batch sizes the signature compiles a graph for (a compile takes ~0.5 s): only the CPU graph of recent exports has them.
        self.batch_buckets: list[int] = serving.get("batch_buckets", []) if self.signature == signatures.get("cpu") else []
        self.vocab_size = int(version.metadata.get("vocab_size") or version.load_tokenizer().vocab_size)
        # A two-label export answers each sequence's probability and logit; a k-label one, k of each.
        self._probability, self._logit = ("probabilities", "logits") if version.classes > 1 else ("probability", "logit")
        log.info("serving signature %s of %s v%s", self.signature, version.name, version.version)

    def predict(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Probabilities of positive, one per sequence (``[n, k]`` for k labels); the batch is padded to its own longest
        (the signature pads further)."""
        return self._serve(token_ids=tf.constant(_padded(sequences)))[self._probability].numpy()

    @property
    def explains(self) -> bool:
        return self._explain is not None

    def explain(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Probabilities, logits, and each sequence's per-token contributions to its logit (they sum to logit - bias)."""
        if self._explain is None:
            raise RuntimeError(f"{self.version.name} v{self.version.version} has no explain signature")
        out = self._explain(token_ids=tf.constant(_padded(sequences)))
        contributions = out["contributions"].numpy()  # [n, time] or [n, time, k]
        rows = [row[: len(s)] for row, s in zip(contributions, sequences, strict=True)]
        return out[self._probability].numpy(), out[self._logit].numpy(), rows

    def warm_up_batch_sizes(self, max_batch_size: int | None = None) -> list[int]:
        """Batch sizes whose calls, between them, compile every graph a caller of up to ``max_batch_size`` texts can meet.

        One per batch bucket up to the first that holds ``max_batch_size`` (all of them when unset); a larger
        batch runs as chunks of the largest bucket, so it adds no shape, and one call of it checks that path.
        """
        if not self.batch_buckets:
            return [1, 8, 32]
        largest = self.batch_buckets[-1]
        sizes = sorted({self.padded_batch_size(n) for n in range(1, min(max_batch_size or largest, largest) + 1)})
        return [*sizes, largest + 1] if max_batch_size and max_batch_size > largest else sizes

    def warm_up(self, max_batch_size: int | None = None, explain: bool = False) -> float:
        """Pay for tracing and XLA compiles (or loads from the compile cache) before a request meets them, so that no
        request waits for one; returns the seconds spent. ``explain``: the explaining graph's shapes instead.

        The fused CPU graph compiles one program per batch bucket (its time axis is
        always padded to the model's length), so every bucket a worker can meet is
        run once here. Other signatures (Keras' graph, cuDNN) compile nothing per
        shape: a few calls warm them.
        """
        if explain and not self.explains:
            return 0.0
        started = time.perf_counter()
        sizes = self.warm_up_batch_sizes(max_batch_size)
        run = self.explain if explain else self.predict
        for batch in sizes:
            run([[2] * 16] * batch)
        seconds = time.perf_counter() - started
        graph = "explain" if explain else self.signature
        log.info("warm-up: %s on %d batch sizes (%s) in %.1fs", graph, len(sizes), ", ".join(map(str, sizes)), seconds)
        return seconds

    def padded_batch_size(self, texts: int) -> int:
        """Rows a call of ``texts`` texts really computes: its batch bucket (chunks of the largest past it), or itself."""
        if not self.batch_buckets:
            return texts
        largest = self.batch_buckets[-1]
        if texts > largest:
            return -(-texts // largest) * largest
        return min(b for b in self.batch_buckets if b >= texts)

    def measure_step_overhead(self, width: int = 256, big: int = 64, repeats: int = 7) -> float:
        """A call costs about ``width × (a + b × texts)``; return ``a / b``, the fixed cost of a
        step in texts' worth of work, which decides when splitting a batch by length pays.

        The call's own fixed cost (a few hundred µs of TensorFlow dispatch, the same for any
        width) lands in ``a``: measured at a review's typical width, not a short one, it weighs
        as much as it does in real calls. 1 and ``big`` are batch buckets of the default list,
        so no padding row blurs the difference.
        """

        width = min(width, int(self.version.metadata.get("serving", {}).get("max_length", width)))  # the compiled width, not beyond

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
