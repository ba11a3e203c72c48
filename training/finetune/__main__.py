"""``python -m training.finetune --data FILE --name NAME``: a model of the user's own labelled texts, its report, next to the movie model.

Reads ``FILE`` (CSV or JSON Lines: a text and a label column, 2 to 20 labels,
an optional split column), splits it (stratified), trains the linear baseline
and fine-tunes the base model (``--base``, default ``sentiment``: its highest
version), and writes the next version of ``NAME`` under ``--model-store``
(default: the project's ``model_store/``) with ``metadata.json``,
``MODEL_CARD.md`` and ``report.html``. Nothing is written unless everything
succeeded: a bad file exits with status 2 and a message naming its line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.config import ROOT
from training.finetune.recipe import Recipe


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.finetune",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="CSV (.csv, .tsv) or JSON Lines (.jsonl) of labelled texts.")
    p.add_argument("--name", required=True, help="Model name: the version is written to MODEL_STORE/NAME/<next version>.")
    p.add_argument("--base", default="sentiment", help="Base model name in the store (its highest version), or a version folder.")
    p.add_argument("--model-store", type=Path, default=ROOT / "model_store", help="Where models live (TensorFlow Serving layout).")
    p.add_argument("--version", type=int, default=None, help="Version number to write (default: the next free one).")
    data = p.add_argument_group("input")
    data.add_argument("--text-column", default="text")
    data.add_argument("--label-column", default="label")
    data.add_argument("--split-column", default=None, help="Optional column of train / validation / test (empty: dealt out).")
    data.add_argument("--weight-column", default=None, help="Optional column of per-row weights, e.g. the labellers' confidence.")
    data.add_argument("--labels", default=None, help="Comma-separated output order of the labels (default: sorted).")
    data.add_argument("--validation-share", type=float, default=0.1, help="Share of the rows held out for choices (early stopping).")
    data.add_argument("--test-share", type=float, default=0.2, help="Share of the rows held out for the report.")
    data.add_argument("--min-per-class", type=int, default=20, help="Fewest texts of one label the data may have.")
    data.add_argument("--max-rows", type=int, default=1_000_000, help="Refuse files with more rows than this.")
    train = p.add_argument_group("training")
    defaults = Recipe()
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="Most epochs (early stopping usually ends sooner).")
    train.add_argument(
        "--patience", type=int, default=defaults.patience, help="Epochs without a better validation macro-F1 before stopping."
    )
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Of the new output layer.")
    train.add_argument(
        "--body-learning-rate", type=float, default=defaults.body_learning_rate, help="Of the pretrained embedding and BiLSTM."
    )
    train.add_argument("--dropout", type=float, default=defaults.dropout)
    train.add_argument(
        "--distill", type=float, default=defaults.distill, help="Share of the target taken from the linear teacher (0: labels only)."
    )
    train.add_argument(
        "--freeze-embedding-epochs",
        type=int,
        default=defaults.freeze_embedding_epochs,
        help="Epochs at the start during which the word vectors stay as they are.",
    )
    train.add_argument("--no-class-weights", action="store_true", help="Do not weigh labels by their rarity.")
    train.add_argument("--min-count", type=int, default=2, help="New words must appear this often in the training texts.")
    return p


def recipe_of(args: argparse.Namespace) -> Recipe:
    return Recipe(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        body_learning_rate=args.body_learning_rate,
        dropout=args.dropout,
        distill=args.distill,
        freeze_embedding_epochs=args.freeze_embedding_epochs,
        class_weights=not args.no_class_weights,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.data import DataError
    from training.finetune.flow import run

    try:
        path = run(args, recipe_of(args))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(path)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
