"""``python -m training``: train, evaluate and export the sentiment model."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.data import DataError
from training.long_texts import add_long_text_arguments


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` unless the help text already explains the default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the LSTM sentiment model and export it as a versioned SavedModel.",
        formatter_class=_HelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        type=Path,
        help="IMDB folder or .tar.gz (aclImdb/{train,test}/{pos,neg}), or a CSV/JSONL file with "
        "'text' and 'label' columns (optional 'group'). Unset: download the official IMDB archive into --cache-dir.",
    )
    data.add_argument("--test-data", type=Path, help="Evaluation set (same formats); default: the IMDB test split, or none for a table.")
    data.add_argument(
        "--unlabeled",
        type=Path,
        help="Unlabelled texts for word2vec pre-training and --distill: folder/.tar.gz of .txt files, "
        ".txt (one per line) or a table; its test/ folders are ignored. Labelled training texts are always used too.",
    )
    data.add_argument(
        "--cache-dir", type=Path, help="Where the downloaded archive is kept (default: ~/.cache/sentiment or $SENTIMENT_DATA_CACHE)."
    )
    data.add_argument("--url", default=None, help="Archive to download when --data is unset (default: Stanford's aclImdb_v1.tar.gz).")
    data.add_argument("--sha256", default=None, help="Expected SHA-256 of --url's archive.")
    data.add_argument("--validation-fraction", type=float, default=0.1, help="Share of training groups held out for early stopping.")
    data.add_argument("--limit", type=int, default=0, help="Use only this many training (and test) examples, for quick runs; 0 = all.")

    tok = p.add_argument_group("tokenizer")
    tok.add_argument("--vocab-size", type=int, default=30_000, help="Vocabulary size, padding and OOV ids included.")
    tok.add_argument("--min-count", type=int, default=2, help="Words seen fewer times than this are OOV.")
    tok.add_argument("--max-length", type=int, default=400, help="Longest token sequence; longer texts lose their middle.")
    tok.add_argument(
        "--head-length", type=int, default=None, help="Tokens kept from the start of a long text (default: half of --max-length)."
    )

    net = p.add_argument_group("network")
    net.add_argument("--embedding-dim", type=int, default=128, help="Embedding size.")
    net.add_argument("--lstm-units", type=int, default=64, help="LSTM units (per direction).")
    net.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True, help="Read the text in both directions.")
    net.add_argument(
        "--pooling", choices=("last", "mean"), default="mean", help="Classify the final LSTM state, or the masked mean of all steps."
    )
    net.add_argument("--dropout", type=float, default=0.3, help="Dropout on embeddings (spatial) and before the output.")
    net.add_argument(
        "--word2vec-epochs", type=int, default=5, help="Epochs of word2vec pre-training for the initial embedding; 0 = random init."
    )

    net.add_argument(
        "--lm-epochs",
        type=int,
        default=0,
        help="Epochs of language-model pre-training of the embedding and both LSTMs (next and previous word) on the "
        "training and --unlabeled reviews, before the classifier trains (0 = off; needs --bidirectional).",
    )
    net.add_argument("--lm-length", type=int, default=100, help="Words per run the language model reads at a time.")

    fit = p.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=2, help="Most epochs; early stopping may end sooner.")
    fit.add_argument("--patience", type=int, default=1, help="Epochs without validation improvement before stopping.")
    fit.add_argument("--batch-size", type=int, default=128, help="Training batch size.")
    fit.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate (at the start, with --cosine-decay).")
    fit.add_argument(
        "--cosine-decay", action=argparse.BooleanOptionalAction, default=True, help="Lower the learning rate to a tenth along a cosine."
    )
    fit.add_argument(
        "--distill",
        type=int,
        default=50_000,
        help="Also train on this many --unlabeled texts, with the linear teacher's probabilities as soft targets (0 = off). "
        "The teacher: TF-IDF word 1-3-grams scaled by naive Bayes ratios + logistic regression.",
    )
    fit.add_argument(
        "--crops",
        type=int,
        default=75_000,
        help="Also train on this many runs of 1-3 sentences cut from --unlabeled texts, with the teacher's probabilities "
        "as targets: short inputs, as callers send them (0 = off).",
    )
    fit.add_argument(
        "--teacher-model",
        type=Path,
        action="append",
        help="An exported two-label version (e.g. model_store/sentiment/3) whose logits are averaged with the linear "
        "teacher's for the --distill and --crops targets (docs/model.md: what it gave). Repeat it for several.",
    )
    fit.add_argument(
        "--adversarial",
        type=float,
        default=0.0,
        help="Weight of the adversarial loss: each text read again with its word vectors moved --epsilon the way that "
        "hurts most (0 = off).",
    )
    fit.add_argument(
        "--virtual-adversarial",
        type=float,
        default=0.0,
        help="Weight of the virtual adversarial loss: the KL divergence between the prediction and the prediction "
        "with the word vectors moved --epsilon the way that changes it most; needs no label (0 = off).",
    )
    fit.add_argument(
        "--epsilon", type=float, default=1.0, help="Size of those moves over a whole text, in word-vector norms (root mean square)."
    )
    fit.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Fit a temperature for the logit on the validation split and fold it into the output layer.",
    )
    fit.add_argument(
        "--quick",
        action="store_true",
        help="The same recipe on a small sample (--limit 2000, one epoch of each, 1,000 distilled texts and crops), "
        "to check a change end to end; options given explicitly still apply.",
    )
    fit.add_argument("--seed", type=int, default=1, help="Seed for splits, initialisation and shuffling.")
    fit.add_argument("--no-baseline", action="store_true", help="Skip the TF-IDF bigram + logistic regression baseline.")

    add_long_text_arguments(p)

    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("model_store"), help="Model store folder.")
    out.add_argument("--name", default="sentiment", help="Model name: the export goes to OUT/NAME/VERSION/.")
    out.add_argument("--version", type=int, default=None, help="Version number (default: one above the highest present).")
    return p


# The whole recipe (every step, the same options) on a small sample: minutes instead of an hour, for tests and
# for trying a change end to end. Options given on the command line still win.
QUICK = {"limit": 2_000, "vocab_size": 8_000, "word2vec_epochs": 1, "epochs": 1, "patience": 1, "distill": 1_000, "crops": 1_000}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.quick:  # parsed again over the quick defaults, so that options given explicitly keep their values
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    if args.teacher_model and not (args.unlabeled and (args.distill or args.crops)):
        p.error("--teacher-model labels the --distill and --crops texts: it needs --unlabeled and one of them")
    for teacher in args.teacher_model or ():
        if not (teacher / "saved_model.pb").is_file():
            p.error(f"--teacher-model {teacher}: not an exported version (no saved_model.pb)")
    if args.lm_epochs > 0 and not args.bidirectional:
        p.error("--lm-epochs pre-trains the two LSTMs of a bidirectional network: drop --no-bidirectional")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    from training.pipeline import run  # TensorFlow loads only once the arguments are known good

    try:
        run(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
