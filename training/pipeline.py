"""Data → tokenizer → word vectors → network → evaluation → SavedModel + model card."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from service.tokenizer import SCHEME, Tokenizer
from training import data as datasets
from training.adversarial import Perturbations, PerturbedTraining
from training.data import LABEL_NAMES, DataError, Dataset, sentence_crops
from training.model import Architecture, BucketedBatches, build_model, pad
from training.model_card import PROBES, write_model_card

log = logging.getLogger("training")


def dataset_digest(path: Path) -> str:
    """SHA-256 of the data file, or of a folder's files (names and bytes, in order)."""
    from training.download import sha256_of

    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def split_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out whole groups (IMDB: runs of reviews of the same movies), so validation
    accuracy predicts accuracy on unseen movies instead of overstating it."""
    groups = np.array(train.groups)
    labels = np.array(train.labels)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in (0, 1):  # stratified: the same share of each class's groups
        candidates = np.unique(groups[labels == label])
        if len(candidates) < 2:
            raise DataError(f"need at least two groups of label {label} to hold out a validation split")
        held.update(rng.choice(candidates, size=max(1, round(len(candidates) * fraction)), replace=False).tolist())
    in_validation = np.isin(groups, list(held))
    return train.subset(np.flatnonzero(~in_validation).tolist()), train.subset(np.flatnonzero(in_validation).tolist())


def sample_of(dataset: Dataset, limit: int, seed: int) -> Dataset:
    """A seeded random ``limit`` items of ``dataset`` (all of it when ``limit`` is 0), in their order."""
    if not limit or len(dataset) <= limit:
        return dataset
    return dataset.subset(sorted(np.random.default_rng(seed).choice(len(dataset), limit, replace=False).tolist()))


def predict_sorted(score, sequences: list[list[int]], batch_size: int = 256) -> np.ndarray:
    """Score ``sequences`` in length-sorted batches (little padding); ``score`` maps int32 ids to probabilities."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    out = np.zeros(len(sequences), dtype="float32")
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        out[members] = np.asarray(score(pad([sequences[i] for i in members]))).reshape(-1)
    return out


def predict_probabilities(model: keras.Model, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Each text's probability as the service computes it, long texts read by ``tokenizer``'s policy."""
    from training.long_texts import score_texts

    # A graph, traced once for any [batch, time]: called eagerly, the LSTM would step through time in Python.
    score = tf.function(lambda ids: model(ids, training=False), input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return score_texts(lambda sequences: predict_sorted(score, sequences), tokenizer, texts)[0]


def same_side(targets: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """1 where target and prediction fall on the same side of 0.5: accuracy that also works for soft targets."""
    return tf.cast(tf.equal(tf.reshape(targets, [-1]) >= 0.5, tf.reshape(probabilities, [-1]) >= 0.5), tf.float32)


def _as_json(value):
    """An option's value as metadata.json holds it: paths (alone or in a list) as strings."""
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def run(args: argparse.Namespace) -> Path:
    from training.metrics import LinearModel, classification_metrics

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    source = args.data
    if source is None:
        from training.download import DEFAULT_CACHE, IMDB_SHA256, IMDB_URL, fetch

        source = fetch(args.url or IMDB_URL, args.sha256 or IMDB_SHA256, args.cache_dir or DEFAULT_CACHE)
    splits = datasets.load(source)
    train_all, test = splits["train"], splits["test"]
    if args.test_data:
        test = datasets.load(args.test_data)["test" if args.test_data.is_dir() or "tar" in args.test_data.name else "train"]
    if len(set(train_all.labels)) < 2:
        raise DataError(f"{source}: training data must hold both labels")
    train_all = sample_of(train_all, args.limit, args.seed)
    test = sample_of(test, args.limit, args.seed)
    train, validation = split_validation(train_all, args.validation_fraction, args.seed)
    log.info("data: %d train, %d validation (held-out groups), %d test", len(train), len(validation), len(test))

    tokenizer = Tokenizer.fit(train.texts, args.vocab_size, args.min_count, args.max_length, args.head_length)
    unlabeled = []
    if args.unlabeled and (args.word2vec_epochs > 0 or args.distill > 0):
        from training.embeddings import read_unlabeled

        unlabeled = read_unlabeled(args.unlabeled)
        log.info("%d unlabelled texts from %s", len(unlabeled), args.unlabeled)
    embedding_init = None
    if args.word2vec_epochs > 0:
        from training.embeddings import pretrain_word2vec

        embedding_init = pretrain_word2vec(train.texts + unlabeled, tokenizer, args.embedding_dim, args.word2vec_epochs, args.seed)

    # Linear models: the bigram baseline to beat, and the stronger NB-weighted trigram teacher of --distill/--crops.
    baseline = None if args.no_baseline else LinearModel(train.texts, train.labels)
    teacher = LinearModel.teacher(train.texts, train.labels) if unlabeled and (args.distill or args.crops) else None
    train_sequences = [e.ids for e in tokenizer.encode_batch(train.texts)]
    train_targets: list[float] = list(train.labels)
    distilled, crops = [], []
    if teacher is not None:
        distilled = [unlabeled[i] for i in np.random.default_rng(args.seed).permutation(len(unlabeled))[: args.distill]]
        crops = sentence_crops(unlabeled, args.crops, args.seed)
        train_sequences += [e.ids for e in tokenizer.encode_batch(distilled + crops)]
        targets = teacher.predict_proba(distilled + crops)
        if args.teacher_model:
            from training.ensemble_teacher import mean_logit, version_probabilities

            targets = mean_logit(targets, *(version_probabilities(path, distilled + crops) for path in args.teacher_model))
            log.info("teacher: the linear model and %s, logits averaged", ", ".join(map(str, args.teacher_model)))
        train_targets += targets.tolist()
        log.info(
            "distillation: %d unlabelled texts, %d runs of 1-3 of their sentences; the teacher's probabilities as targets",
            len(distilled),
            len(crops),
        )

    arch = Architecture(tokenizer.vocab_size, args.embedding_dim, args.lstm_units, args.bidirectional, args.dropout, pooling=args.pooling)
    model = build_model(arch, embedding_init)
    language_model = None
    if args.lm_epochs > 0:
        from training.language_model import pretrain

        # Every review it may read: the labelled training ones (already encoded, first in train_sequences) and the
        # unlabelled ones; validation and test held out.
        reviews = train_sequences[: len(train)] + [e.ids for e in tokenizer.encode_batch(unlabeled)]
        start = embedding_init if embedding_init is not None else model.get_layer("embedding").get_weights()[0]
        language_model = pretrain(reviews, tokenizer.vocab_size, start, args.lstm_units, args.lm_epochs, args.seed, length=args.lm_length)
        language_model.load_into(model)
    trained = model
    perturbations = Perturbations(args.adversarial, args.virtual_adversarial, args.epsilon)
    if perturbations.active:
        trained = PerturbedTraining(model, perturbations)
    learning_rate = args.learning_rate
    if args.cosine_decay:  # from the full rate down to a tenth, over all the epochs' steps
        steps = args.epochs * -(-len(train_sequences) // args.batch_size)
        learning_rate = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps, alpha=0.1)
    accuracy = keras.metrics.MeanMetricWrapper(same_side, name="accuracy")  # soft targets count by the side of 0.5 they are on
    trained.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=[accuracy])
    train_batches = BucketedBatches(train_sequences, train_targets, args.batch_size, shuffle=True, seed=args.seed)
    validation_sequences = [e.ids for e in tokenizer.encode_batch(validation.texts)]
    validation_batches = BucketedBatches(validation_sequences, validation.labels, 256, shuffle=False, seed=args.seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=args.patience, restore_best_weights=True)
    history = trained.fit(
        train_batches.dataset(),
        validation_data=validation_batches.dataset(),
        epochs=args.epochs,
        callbacks=[stop],
        shuffle=False,  # the batches shuffle themselves
        verbose=1 if sys.stdout.isatty() else 2,
    )
    fit_seconds = time.perf_counter() - started

    from training.long_texts import long_text_policy

    # Measured as the exported version will serve: long texts read by the policy it records.
    served = tokenizer.with_policy(long_text_policy(args))
    validation_probabilities = predict_probabilities(model, served, validation.texts)
    temperature = 1.0
    if args.calibrate:
        from training.calibration import apply_temperature, fit_temperature

        temperature = fit_temperature(validation.labels, validation_probabilities)
        apply_temperature(model, temperature)
        log.info("calibration: logits divided by %.3f (fitted on the validation split)", temperature)
        validation_probabilities = predict_probabilities(model, served, validation.texts)
    evaluation = {"validation": classification_metrics(validation.labels, validation_probabilities)}
    if len(test):
        evaluation["test"] = classification_metrics(test.labels, predict_probabilities(model, served, test.texts))
        # Both linear models were trained on the same texts as the LSTM (validation held out).
        if baseline is not None:
            evaluation["baseline_tfidf_logreg_test"] = baseline.evaluate(test.texts, test.labels)
        if teacher is not None:
            evaluation["teacher_nb_trigram_logreg_test"] = teacher.evaluate(test.texts, test.labels)
    for name, values in evaluation.items():
        log.info("%s: %s", name, values)
    probe_scores = predict_probabilities(model, tokenizer, [text for text, _ in PROBES])
    probes = [{"text": t, "expected": e, "score": round(float(s), 4)} for (t, e), s in zip(PROBES, probe_scores, strict=True)]

    from training.export import export, next_version

    model_dir = args.out / args.name
    version = args.version or next_version(model_dir)
    metadata = {
        "name": args.name,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "source": str(source if args.data else (args.url or "aclImdb_v1.tar.gz")),
            "sha256": dataset_digest(source),
            "train": len(train),
            "validation": len(validation),
            "test": len(test),
            "unlabeled": str(args.unlabeled) if args.unlabeled else None,
            "distilled": len(distilled),
            "crops": len(crops),
            "language_model_sampled_loss": round(language_model.sampled_loss, 3) if language_model else None,
        },
        "label_names": list(LABEL_NAMES),
        "decision_threshold": 0.5,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": {**tokenizer.config(), "scheme": SCHEME},
        "architecture": arch.__dict__,
        "hyperparameters": {k: _as_json(v) for k, v in vars(args).items()},
        "epochs_run": len(history.history["loss"]),
        "history": {k: [round(float(x), 4) for x in v] for k, v in history.history.items()},
        "training_seconds": round(fit_seconds, 1),
        "temperature": round(temperature, 4),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "metrics": evaluation,
        "probes": probes,
    }
    # Training read long texts head+tail; the export records how the served version reads them.
    path = export(model, served, model_dir / str(version), metadata)
    write_model_card(path, metadata)
    log.info("exported %s in %.0fs total", path, time.perf_counter() - started)
    return path
