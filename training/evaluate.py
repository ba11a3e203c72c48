"""``python -m training.evaluate``: metrics of an exported model on a data set.

Loads the artifact the way a server does (``tf.saved_model.load``, signature
``serving_default``, the tokenizer from its ``assets/``), so it measures what
production serves.
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
    p.add_argument("--split", choices=("test", "train"), default="test", help="Which IMDB split to evaluate on.")
    p.add_argument("--limit", type=int, default=0, help="Evaluate on a random sample of this many texts; 0 = all.")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="Also train and score the linear models: the TF-IDF bigram baseline and the NB-weighted 1-3-gram teacher.",
    )
    p.add_argument("--truncation", action="store_true", help="Compare head+tail with head-only and tail-only truncation on the long texts.")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    from service.config import ROOT
    from service.model_store import resolve
    from service.tokenizer import Tokenizer
    from training import data as datasets
    from training.data import DataError
    from training.metrics import LinearModel, classification_metrics
    from training.pipeline import predict_sorted, sample_of

    try:
        version = resolve(args.model.parent, int(args.model.name)) if args.model else resolve(ROOT / "model_store" / "sentiment")
        splits = datasets.load(args.data)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = splits[args.split] if len(splits[args.split]) else splits["train"]
    data = sample_of(data, args.limit, seed=0)
    tokenizer = version.load_tokenizer()
    serve = tf.saved_model.load(str(version.path)).signatures["serving_default"]
    score = lambda ids: serve(token_ids=tf.constant(ids))["probability"].numpy()  # noqa: E731
    probabilities = predict_sorted(score, [e.ids for e in tokenizer.encode_batch(data.texts)])
    report = {
        "model": f"{version.name} v{version.version}",
        "data": str(args.data),
        "metrics": classification_metrics(data.labels, probabilities),
    }

    if args.truncation:
        long_ones = [i for i, e in enumerate(tokenizer.encode_batch(data.texts)) if e.truncated]
        labels = [data.labels[i] for i in long_ones]
        texts = [data.texts[i] for i in long_ones]
        report["truncation"] = {"long_texts": len(long_ones)}
        for name, head in (("head+tail", tokenizer.head_length), ("head only", tokenizer.max_length), ("tail only", 0)):
            policy = Tokenizer(tokenizer.vocabulary, tokenizer.max_length, head)
            p_long = predict_sorted(score, [e.ids for e in policy.encode_batch(texts)])
            report["truncation"][name] = classification_metrics(labels, p_long)["accuracy"] if long_ones else None
    if args.baseline:
        train = splits["train"]
        report["baseline_tfidf_logreg"] = LinearModel(train.texts, train.labels).evaluate(data.texts, data.labels)
        teacher = LinearModel.teacher(train.texts, train.labels)
        report["teacher_nb_trigram_logreg"] = teacher.evaluate(data.texts, data.labels)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
