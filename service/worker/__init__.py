"""The inference workers: ``python -m service.worker`` (`service.worker.__main__`).

- `loop`: the worker's life (signals, heartbeat, takeover, Redis outages).
- `runner`: performing one batch (model calls, answers), against `runner.ScoringModel`.
- `batching`: how queued requests become model calls (no Redis, no TensorFlow).
- `model`: the only module that imports TensorFlow.
- `compile_cache`: TensorFlow's persistent XLA compile cache, keyed per build.
"""
