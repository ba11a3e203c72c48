"""``make bench``'s stand-in inference worker: the real worker loop (Redis reads, batching, answers,
heartbeats, metrics) around a model call that costs nothing, so that the benchmark can show what the serving
path itself costs. Benchmark only: the service never runs this.

    python -m bench.null_worker      (same SENTIMENT_* settings as ``python -m service.worker``)
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

from service.config import load_settings
from service.logs import configure_logging
from service.model_store import ModelVersion, resolve
from service.queue import RequestQueue, connect
from service.worker.loop import InferenceWorker
from service.worker.runner import BatchRunner
from service.worker.versions import Slot


class NullModel:
    """Answers 0.5 for every text at once, every token's weight 0: no TensorFlow, no compute (a `ScoringModel`)."""

    def __init__(self, version: ModelVersion):
        self.version = version
        self.vocab_size = int(version.metadata["vocab_size"])

    def predict(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        return [0.5] * len(sequences)

    def explain(self, sequences: Sequence[Sequence[int]]) -> tuple[list[float], list[float], list[list[float]]]:
        return [0.5] * len(sequences), [0.0] * len(sequences), [[0.0] * len(s) for s in sequences]

    def padded_batch_size(self, texts: int) -> int:
        return texts


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    version = resolve(settings.model_dir, settings.model_version)
    connection = connect(settings.redis_url, settings.redis_timeout_s, blocking_s=settings.heartbeat_interval_s)
    queue = RequestQueue(connection, settings.redis_key_prefix, version.name, version.version)
    worker = InferenceWorker(settings, f"{socket.gethostname()}-{os.getpid()}-null", "none")
    worker.add(Slot.of(BatchRunner(settings, NullModel(version), queue, step_overhead_texts=0.0), settings))
    worker.install_signal_handlers()
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
