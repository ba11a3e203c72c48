"""A SavedModel's signatures in TensorFlow Serving's JSON form: what ``GET /v1/models/<name>/metadata`` answers.

The API processes never import TensorFlow, so the export records the
description in ``metadata.json`` (key ``signature_defs``) and the TensorFlow
Serving front door (`service.protocols.tfserving`) answers it as stored.

The description is read from the ``serve`` MetaGraphDef of ``saved_model.pb``,
the protocol buffer TensorFlow Serving itself reads, and printed the way its
REST handler prints it (``MessageToJsonString`` with proto field names and
fields without presence: ``DT_STRING``, ``tensor_shape.dim[].size`` as strings,
``method_name``, empty ``defaults``). Every signature of the graph is listed,
``__saved_model_init_op`` included, as TensorFlow Serving lists them.

Backfill versions exported before the key existed (only that key is added;
the rest of the file is rewritten as `training.export` writes it)::

    python -m training.signatures model_store/sentiment/2 model_store/sentiment/3
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("training.signatures")

METADATA_KEY = "signature_defs"
SERVING_TAG = "serve"


def describe_signatures(export_dir: Path) -> dict[str, dict]:
    """Every signature of ``export_dir``'s serving graph, keyed by name, in TensorFlow Serving's JSON form."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    graphs = [g for g in saved_model.meta_graphs if SERVING_TAG in g.meta_info_def.tags]
    if len(graphs) != 1:
        raise ValueError(f"{export_dir} has {len(graphs)} MetaGraphDefs tagged {SERVING_TAG!r}; TensorFlow Serving needs exactly one")
    described = {}
    for name, signature in sorted(graphs[0].signature_def.items()):
        as_json = json_format.MessageToDict(signature, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        for tensors in ("inputs", "outputs"):  # protobuf maps have no order: sort them, so that a re-export writes the same file
            as_json[tensors] = dict(sorted(as_json[tensors].items()))
        described[name] = as_json
    return described


def backfill(export_dir: Path) -> bool:
    """Add ``signature_defs`` to ``export_dir/metadata.json``; False when it was already there and unchanged."""
    path = Path(export_dir) / "metadata.json"
    before = path.read_text(encoding="utf-8")
    metadata = json.loads(before)
    metadata[METADATA_KEY] = describe_signatures(export_dir)
    after = json.dumps(metadata, indent=2) + "\n"  # as training.export writes it
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.signatures", description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", type=Path, help="exported versions, e.g. model_store/sentiment/3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for version in args.versions:
        changed = backfill(version)
        log.info("%s: %s", version / "metadata.json", "signature_defs written" if changed else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
