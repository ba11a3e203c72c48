"""``python -m training.evaluate``: metrics of an exported model on a data set.

Loads the artifact the way a server does (``tf.saved_model.load``, signature
``serving_default``, the tokenizer from its ``assets/``, long texts read by the
version's own policy), so it measures what production serves. ``--long-texts``
compares the ways of reading long texts side by side (`training.long_texts`);
run it on ``--split validation`` (the version's own held-out training groups)
to choose one, and on the test split to report it. ``--sentences`` adds the
sentence-level check (`training.sentences`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.split("\n\n")[0].strip("`"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", type=Path, default=None, help="Exported version folder (default: highest version under model_store/sentiment)."
    )
    p.add_argument("--data", type=Path, required=True, help="IMDB folder/.tar.gz (its test split is used) or a CSV/JSONL with text,label.")
    p.add_argument(
        "--split",
        choices=("test", "validation", "train"),
        default="test",
        help="Which split: test, or validation (the groups the version held out of its training data: choose policies here).",
    )
    p.add_argument("--limit", type=int, default=0, help="Evaluate on a random sample of this many texts; 0 = all.")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="Also train and score the linear models: the TF-IDF bigram baseline and the NB-weighted 1-3-gram teacher.",
    )
    p.add_argument("--long-texts", action="store_true", help="Compare the ways of reading long texts (head+tail, windows, whole).")
    p.add_argument(
        "--sentences", action="store_true", help="Also score the first and the last sentence of each review alone (training.sentences)."
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    from service.config import ROOT
    from service.model_store import resolve
    from training import data as datasets
    from training.data import DataError
    from training.long_texts import compare_policies, score_texts
    from training.metrics import LinearModel, classification_metrics
    from training.pipeline import predict_sorted, sample_of, split_validation

    try:
        version = resolve(args.model.parent, int(args.model.name)) if args.model else resolve(ROOT / "model_store" / "sentiment")
        splits = datasets.load(args.data)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.split == "validation":
        hp = version.metadata["hyperparameters"]
        training = sample_of(splits["train"], hp.get("limit", 0), hp["seed"])
        data = split_validation(training, hp["validation_fraction"], hp["seed"])[1]
    else:
        data = splits[args.split] if len(splits[args.split]) else splits["train"]
    data = sample_of(data, args.limit, seed=0)
    tf.config.threading.set_intra_op_parallelism_threads(1)  # the compiled graph is cheapest so (README, Speed)
    tokenizer = version.load_tokenizer()
    serve = tf.saved_model.load(str(version.path)).signatures["serving_default"]

    def score(sequences: list[list[int]]):
        return predict_sorted(lambda ids: serve(token_ids=tf.constant(ids))["probability"].numpy(), sequences)

    probabilities, _ = score_texts(score, tokenizer, data.texts)
    report = {
        "model": f"{version.name} v{version.version}",
        "data": f"{args.data} ({args.split} split, {len(data)} texts)",
        "long_texts": tokenizer.long_texts.as_metadata(),
        "metrics": classification_metrics(data.labels, probabilities),
    }
    crops = {}
    if args.sentences:
        from training.sentences import edge_sentences

        crops = {which: edge_sentences(data.texts, data.labels, which) for which in ("first", "last")}
        report["sentences"] = {
            which: classification_metrics(labels, score_texts(score, tokenizer, texts)[0]) for which, (texts, labels) in crops.items()
        }
    if args.long_texts:
        report["long_text_policies"] = compare_policies(score, tokenizer, data.texts, data.labels, long_over=400)
    if args.baseline:
        train = splits["train"]
        baseline = LinearModel(train.texts, train.labels)
        report["baseline_tfidf_logreg"] = baseline.evaluate(data.texts, data.labels)
        teacher = LinearModel.teacher(train.texts, train.labels)
        report["teacher_nb_trigram_logreg"] = teacher.evaluate(data.texts, data.labels)
        for which, (texts, labels) in crops.items():
            report["sentences"][f"{which}_teacher_nb_trigram_logreg"] = teacher.evaluate(texts, labels)
            report["sentences"][f"{which}_baseline_tfidf_logreg"] = baseline.evaluate(texts, labels)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
