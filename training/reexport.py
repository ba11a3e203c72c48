"""``python -m training.reexport model_store/sentiment/2``: an exported version's weights, exported again as the next version.

For a change of serving graph without retraining: the Keras network is rebuilt
from the version's ``metadata.json`` architecture and its SavedModel variables,
then goes through the normal export path (`training.export.export`, the one
``make train`` uses), with the version's metadata (metrics, data set, probes,
hyper-parameters) carried over and a note of where it came from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from service.model_store import ModelVersion, resolve
from service.tokenizer import LongTextPolicy
from training.long_texts import add_long_text_arguments, long_text_policy
from training.model import Architecture, build_model

log = logging.getLogger("training.reexport")


def restore_keras_model(version: ModelVersion) -> keras.Model:
    """The exported network as a Keras model, its weights read from the SavedModel's checkpoint.

    The export's root object holds the network as ``model`` (checkpoint keys
    ``model/_operations/<layer>/...``), so a ``Checkpoint(model=...)`` of the same
    architecture matches it object by object; every weight of the rebuilt model
    must be found there.
    """
    model = build_model(Architecture(**version.metadata["architecture"]))
    status = tf.train.Checkpoint(model=model).read(str(version.path / "variables" / "variables"))
    status.assert_existing_objects_matched().expect_partial()  # the export also holds its tokenizer table and serving graph
    return model


def reexport(source: ModelVersion, out_dir: Path, version: int | None = None, long_texts: LongTextPolicy | None = None) -> Path:
    """Export ``source``'s weights as ``out_dir/<version>`` (default: the next free one) with its model card,
    reading long texts by ``long_texts`` (default: as ``source`` does)."""
    from training.export import export, next_version
    from training.model_card import PROBES
    from training.pipeline import predict_probabilities

    model = restore_keras_model(source)
    tokenizer = source.load_tokenizer(long_texts)
    version = version or next_version(out_dir)
    # Scored again rather than copied, so that the card's "scored by this version" stays true (same weights: same scores).
    scores = predict_probabilities(model, tokenizer, [text for text, _ in PROBES])
    probes = [{"text": t, "expected": e, "score": round(float(s), 4)} for (t, e), s in zip(PROBES, scores, strict=True)]
    metadata = {
        **source.metadata,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "exported_from": {
            "version": source.version,
            "created_at": source.metadata.get("created_at"),
            "note": f"v{source.version}'s weights unchanged, exported again with the current serving graph",
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
        },
        "probes": probes,
    }
    for written_by_export in ("serving", "long_texts", "signature_defs", "metrics_as_served"):  # the new export's, or measured again
        metadata.pop(written_by_export, None)
    path = export(model, tokenizer, out_dir / str(version), metadata)
    write_card(path, metadata)
    return path


def write_card(path: Path, metadata: dict) -> Path:
    """The model card of a re-exported version: the usual one, and where its weights came from."""
    from training.model_card import write_model_card

    card = write_model_card(path, metadata)
    source, on = metadata["exported_from"], metadata["created_at"][:10]
    with card.open("a", encoding="utf-8") as out:
        out.write(
            f"\n## Provenance\nThe weights of v{source['version']} (exported {source['created_at']}), unchanged, exported again\n"
            f"with the current serving graph on {on}; data, training and metrics above are v{source['version']}'s.\n"
        )
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.reexport", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("source", type=Path, help="Exported version folder, e.g. model_store/sentiment/2.")
    p.add_argument("--version", type=int, default=None, help="Version number to write (default: the next free one beside the source).")
    add_long_text_arguments(p, default=None)  # unset: read long texts as the source version does
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        source = resolve(args.source.parent, int(args.source.name))
    except (ValueError, RuntimeError) as exc:
        p.error(f"{args.source}: {exc}")  # exits with status 2
    path = reexport(source, args.source.parent, args.version, long_text_policy(args))
    log.info("exported %s from %s", path, source.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
