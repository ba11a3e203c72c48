"""The protocols the service speaks, one blueprint each, all over the one scoring core (`service.scoring.Scorer`).

- `native`: the service's own API, ``POST /predict`` and ``GET /model``.
- `tfserving`: TensorFlow Serving's REST API, ``/v1/models/...``.
- `kserve`: KServe's Open Inference Protocol v2, ``/v2/...``.

Each module only parses its protocol's requests and shapes its answers; none
reaches the model except through the Redis queue and a worker.
"""

from __future__ import annotations

from service.api.protocols import kserve, native, tfserving

BLUEPRINTS = (native.bp, tfserving.bp, kserve.bp)
