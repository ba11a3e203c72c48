"""The fine-tuning flow, start to end: read, split, baseline, vocabulary, train, evaluate, export, report.

Everything is written into a hidden staging folder beside the versions
(``MODEL_STORE/NAME/.finetune-*``; the service only reads numbered folders)
and renamed into place at the very end, so an error at any step leaves no
version, and no half of one, behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from service.model_store import ModelNotFound, ModelVersion, resolve
from service.tokenizer import SCHEME, LongTextPolicy
from training.data import DataError
from training.finetune import baseline as linear
from training.finetune import evaluation as ev
from training.finetune import scores
from training.finetune.reader import Columns, read_table
from training.finetune.recipe import Recipe, build, logits_function, sample_weights, train
from training.finetune.splits import prepare
from training.finetune.vocabulary import extend, extended_embedding, new_words

log = logging.getLogger("training.finetune")


def base_version(store: Path, base: str) -> ModelVersion:
    """``--base``: a model name in the store (its highest version), a model folder, or a version folder."""
    try:
        path = Path(base)
        if path.name.isdigit() and path.is_dir():
            return resolve(path.parent, int(path.name))
        return resolve(path if os.sep in base and path.is_dir() else store / base)
    except (ModelNotFound, ValueError) as exc:
        raise DataError(f"base model {base!r}: {exc}") from None


class Clock:
    """Wall and CPU seconds of each phase (the lead may pause the process: CPU time says what the work cost)."""

    def __init__(self):
        self.started, self.cpu = time.perf_counter(), time.process_time()
        self.phases: dict[str, dict] = {}
        self._mark = (self.started, self.cpu)

    def lap(self, phase: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.phases[phase] = {"seconds": round(now - self._mark[0], 1), "cpu_seconds": round(cpu - self._mark[1], 1)}
        self._mark = (now, cpu)
        log.info("%s: %.1f s (%.1f s CPU)", phase, *self.phases[phase].values())

    def as_metadata(self) -> dict:
        return {
            "phases": self.phases,
            "total_seconds": round(time.perf_counter() - self.started, 1),
            "total_cpu_seconds": round(time.process_time() - self.cpu, 1),
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, TensorFlow {tf.__version__}",
        }


def run(args: argparse.Namespace, recipe: Recipe) -> Path:
    clock = Clock()
    keras.utils.set_random_seed(recipe.seed)
    columns = Columns(args.text_column, args.label_column, args.split_column, args.weight_column)
    table = read_table(args.data, columns, args.max_rows)
    given = [label.strip() for label in args.labels.split(",")] if args.labels else None
    splits = prepare(table, given, args.validation_share, args.test_share, args.seed, args.min_per_class)
    labels, k = splits.labels, len(splits.labels)
    base = base_version(args.model_store, args.base)
    base_tokenizer = base.load_tokenizer()
    log.info("%s: %d rows, labels %s, splits %s", args.data, table.rows, labels, splits.as_metadata(table.sha256)["splits"])
    clock.lap("read and split")

    train_texts, validation_texts, test_texts = splits.train.texts, splits.validation.texts, splits.test.texts
    y_train, y_validation, y_test = (np.array(part.y) for part in (splits.train, splits.validation, splits.test))
    row_weights = sample_weights(y_train, splits.train.weights, k, recipe.class_weights)
    baseline, baseline_fit = linear.fit_baseline(train_texts, y_train, validation_texts, y_validation)
    teacher = linear.out_of_fold(baseline, y_train, seed=recipe.seed) if recipe.distill > 0 else np.zeros((len(y_train), k))
    clock.lap("linear baseline and teacher")

    from training.reexport import restore_keras_model

    base_model = restore_keras_model(base)
    words = new_words(train_texts, base_tokenizer, args.min_count)
    tokenizer = extend(base_tokenizer, words)
    embedding = extended_embedding(train_texts, tokenizer, base_model.get_layer("embedding").get_weights()[0], seed=recipe.seed)
    from training.model import Architecture

    model, arch = build(base_model, Architecture(**base.metadata["architecture"]), embedding, 1 if k == 2 else k, recipe.dropout)
    targets = (1 - recipe.distill) * np.eye(k)[y_train] + recipe.distill * teacher
    scorer = ev.Scorer(logits_function(model), tokenizer)
    log.info(
        "vocabulary: %d base words + %d new (seen >= %d times), e.g. %s", base_tokenizer.vocab_size, len(words), args.min_count, words[:8]
    )
    # Training reads a long text's first and last tokens, up to max_length, as the movie model's training does.
    reading = tokenizer.with_policy(LongTextPolicy("head_tail", tokenizer.max_length))
    sequences = [e.ids for e in reading.encode_batch(train_texts)]
    history = train(model, sequences, targets, row_weights, lambda _: (y_validation, scorer.texts(validation_texts)), recipe)
    clock.lap("fine-tuning")

    probabilities = {"validation": scorer.texts(validation_texts), "test": scorer.texts(test_texts)}
    baseline_p = {"validation": baseline.predict_proba(validation_texts), "test": baseline.predict_proba(test_texts)}
    base_scorer = ev.Scorer(logits_function(base_model), base_tokenizer)
    base_positive = base_scorer.texts(test_texts)[:, 1]
    evaluation = evaluate(labels, base, y_validation, y_test, probabilities, baseline_p, base_positive, tokenizer, test_texts)
    clock.lap("evaluation")

    model_dir = args.model_store / args.name
    model_dir.mkdir(parents=True, exist_ok=True)
    from training.export import export, next_version

    version = args.version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise DataError(f"{model_dir / str(version)} exists already")
    best = next(row for row in history if row["kept"])
    metadata = {
        "name": args.name,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": str(args.data),
        "labels": labels,
        **({"label_names": labels, "decision_threshold": 0.5} if k == 2 else {}),
        "base": {"name": base.name, "version": base.version},
        "data": {**splits.as_metadata(table.sha256), "columns": columns.__dict__, "conflict_examples": splits.conflict_examples},
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": {**tokenizer.config(), "scheme": SCHEME},
        "vocabulary": {"base_size": base_tokenizer.vocab_size, "added": len(words), "min_count": args.min_count, "first_added": words[:30]},
        "architecture": arch.__dict__,
        "hyperparameters": {
            "seed": args.seed,
            "recipe": recipe.as_metadata(),
            "validation_share": args.validation_share,
            "test_share": args.test_share,
            "min_count": args.min_count,
        },
        "training": {
            "history": history,
            "epochs_run": len(history),
            "best_epoch": best["epoch"],
            "seconds": round(sum(row["seconds"] for row in history), 1),
            "cpu_seconds": round(sum(row["cpu_seconds"] for row in history), 1),
            "summary": f"{len(history)} epochs of at most {recipe.epochs}; epoch {best['epoch']} kept (validation accuracy "
            f"{best['val_accuracy']:.4f}, macro-F1 {best['val_macro_f1']:.4f}).",
        },
        "metrics": {"validation": evaluation["validation"]["model"], "test": evaluation["test"]["model"]},
        "baseline": {
            "description": baseline.description,
            "c": baseline.c,
            **baseline_fit,
            "validation": evaluation["validation"]["baseline"],
            "test": evaluation["test"]["baseline"],
        },
        "comparison": {"baseline": evaluation["test"]["against_baseline"], "base": evaluation["test"]["against_base"]},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    staging = Path(tempfile.mkdtemp(prefix=".finetune-", dir=model_dir))
    try:
        path = export(model, tokenizer, staging / str(version), metadata)
        from training.finetune.card import write_card
        from training.finetune.errors import explain_errors
        from training.finetune.report import write_report

        lines = splits.test.lines
        errors = explain_errors(path, tokenizer, test_texts, y_test, probabilities["test"], labels, lines)
        clock.lap("export")
        metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        metadata["timings"] = clock.as_metadata()
        write_report(path, metadata, evaluation, errors)
        write_card(path, metadata, evaluation)
        metadata["timings"] = clock.as_metadata()  # with the report
        (path / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        path.rename(model_dir / str(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "wrote %s in %.0f s (%.0f s CPU)",
        model_dir / str(version),
        metadata["timings"]["total_seconds"],
        metadata["timings"]["total_cpu_seconds"],
    )
    return model_dir / str(version)


def evaluate(labels, base, y_validation, y_test, probabilities, baseline_p, base_positive, tokenizer, test_texts) -> dict:
    """Everything the report and metadata say about the scores (see `training.finetune.evaluation`)."""
    k = len(labels)
    base_labels = list(base.label_names)
    out = {}
    for split, y in (("validation", y_validation), ("test", y_test)):
        out[split] = {
            "model": scores.classification_report(y, probabilities[split], labels),
            "baseline": scores.classification_report(y, baseline_p[split], labels),
        }
    test = out["test"]
    test["model_reliability"] = scores.reliability(y_test, probabilities["test"])
    test["baseline_reliability"] = scores.reliability(y_test, baseline_p["test"])
    test["against_baseline"] = ev.baseline_comparison(y_test, probabilities["test"], baseline_p["test"], k)
    test["against_base"] = ev.base_comparison(y_test, probabilities["test"], base_positive, labels, base_labels)
    if test["against_base"].get("applicable"):
        members = np.isin(y_test, [labels.index(x) for x in base_labels]) if k > 2 else np.ones(len(y_test), bool)
        base_matrix = np.zeros((len(y_test), k))
        pair = [labels.index(x) for x in base_labels] if k > 2 else [0, 1]
        base_matrix[:, pair[0]], base_matrix[:, pair[1]] = 1 - base_positive, base_positive
        test["base"] = scores.classification_report(y_test[members], base_matrix[members], labels)
    n_tokens = np.array([e.n_tokens for e in tokenizer.encode_batch(test_texts)])
    predictions = {"model": probabilities["test"].argmax(1), "baseline": baseline_p["test"].argmax(1)}
    if k == 2:
        predictions["base"] = (base_positive >= 0.5).astype(int)
    test["by_length"] = ev.by_length(y_test, predictions, n_tokens)
    return out
