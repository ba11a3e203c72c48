"""The network of a fine-tuned version, warm-started from the base model, and how it is trained.

**Warm start.** The base model's word vectors (the vocabulary extended by
`training.finetune.vocabulary`) and its BiLSTM; a new output layer: one
sigmoid unit for two labels, k logits and their softmax for more
(`training.model.build_model` with ``classes``), so the export and its serving
graph are those of the movie model.

**Training** (`train`), on 8,400 short texts where the plain recipe (one
learning rate, hard labels) peaks after 1-2 epochs and then overfits:

* two learning rates: the new head learns at ``learning_rate``, the pretrained
  embedding and BiLSTM at ``body_learning_rate`` (lower), two Adam optimizers.
  3e-3 / 1e-3 reach in 3-4 epochs what 1e-3 / 3e-4 reached in 9 (validation
  macro-F1 0.705 on the tweets), which leaves time to spare;
* the embedding frozen for the first ``freeze_embedding_epochs`` epoch: the new
  head and the BiLSTM settle on the base's word vectors before those vectors
  move, so the 4 M embedding weights do not first chase a random head
  (tweets, validation: macro-F1 0.724 against 0.713 trained from the start;
  two frozen epochs 0.715, frozen throughout 0.58 after two epochs);
* soft targets: ``distill`` of each training text's target is the linear
  teacher's out-of-fold probabilities (`training.finetune.baseline.out_of_fold`),
  the rest its label, as v2 learned from its own teacher's probabilities. Off
  by default: on the tweets the teacher (itself at 0.72) pulled the network
  down (validation macro-F1 0.713 with labels only, 0.705 with half, 0.698
  with 0.8), and not fitting it saves its five folds (about 130 s of 12,000
  tweets);
* class weights (balanced: every label weighs the same in total) times the
  optional per-row weights (``--weight-column``), normalised to mean 1;
* early stopping on validation macro-F1, the best epoch's weights kept.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from training.finetune import scores
from training.model import Architecture, build_model, pad

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    """Every training choice; recorded in ``metadata.json`` (``hyperparameters.recipe``)."""

    epochs: int = 12
    patience: int = 3
    batch_size: int = 32
    learning_rate: float = 3e-3
    body_learning_rate: float = 1e-3
    dropout: float = 0.5
    distill: float = 0.0
    freeze_embedding_epochs: int = 1
    class_weights: bool = True
    seed: int = 0

    def as_metadata(self) -> dict:
        return asdict(self)


def build(base: keras.Model, base_arch: Architecture, embedding: np.ndarray, classes: int, dropout: float) -> keras.Model:
    """The base network with ``embedding`` (``[vocab, dim]``, the base's rows first) and a new head of ``classes`` outputs
    (1: sigmoid). Extra embedding columns past the base's get zero rows in the BiLSTM's input kernels: at the start
    they change nothing, and training decides what they are worth."""
    arch = Architecture(
        vocab_size=embedding.shape[0],
        embedding_dim=embedding.shape[1],
        lstm_units=base_arch.lstm_units,
        bidirectional=base_arch.bidirectional,
        dropout=dropout,
        recurrent_dropout=base_arch.recurrent_dropout,
        pooling=base_arch.pooling,
        classes=classes,
    )
    model = build_model(arch)
    model.get_layer("embedding").set_weights([embedding])
    recurrent = "bilstm" if base_arch.bidirectional else "lstm"
    weights = []
    for weight in base.get_layer(recurrent).get_weights():
        if weight.ndim == 2 and weight.shape[0] == base_arch.embedding_dim and weight.shape[1] == 4 * base_arch.lstm_units:
            extra = embedding.shape[1] - weight.shape[0]  # an input kernel: rows for the extra columns
            weight = np.concatenate([weight, np.zeros((extra, weight.shape[1]), weight.dtype)])
        weights.append(weight)
    model.get_layer(recurrent).set_weights(weights)
    return model, arch


def head_layer(model: keras.Model) -> keras.layers.Dense:
    return model.get_layer("logits") if any(layer.name == "logits" for layer in model.layers) else model.get_layer("probability")


def logits_function(model: keras.Model):
    """``ids → logits [n, 1 or k]`` of ``model`` (the head's pre-activation, whichever the head), sharing its weights."""
    features = keras.Model(model.input, model.get_layer("dropout").output)
    head = head_layer(model)

    def logits(ids, training: bool = False):
        return tf.matmul(features(ids, training=training), head.kernel) + head.bias

    return logits


def sample_weights(y: np.ndarray, weights: list[float | None], classes: int, balanced: bool) -> np.ndarray:
    """Balanced class weights times the rows' own weights (missing: their mean), scaled to mean 1."""
    given = [w for w in weights if w is not None]
    fill = float(np.mean(given)) if given else 1.0
    out = np.array([fill if w is None else w for w in weights], dtype="float64")
    if balanced:
        counts = np.bincount(y, minlength=classes)
        out *= (len(y) / (classes * np.maximum(counts, 1)))[y]
    if out.sum() <= 0:
        raise ValueError("every training row has weight 0")
    return (out / out.mean()).astype("float32")


def gate(gradient, on):
    """``gradient`` times the scalar ``on`` (0: the variable is frozen), sparse (an embedding's) or dense."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * on, gradient.indices, gradient.dense_shape)
    return gradient * on


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar lengths (sorted within pools of ``pool`` batches), in random order."""
    order = rng.permutation(len(lengths))
    out = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def train(
    model: keras.Model,
    sequences: list[list[int]],
    targets: np.ndarray,
    weights: np.ndarray,
    validate,
    recipe: Recipe,
) -> list[dict]:
    """Fit ``model`` on ``sequences`` (soft ``targets [n, k]``, ``weights [n]``) with `Recipe`'s two learning rates,
    stopping when ``validate(model) → (y, probabilities)`` has not improved its macro-F1 for ``patience`` epochs;
    the best epoch's weights are restored. Returns one row per epoch (loss, validation scores, seconds)."""
    logits_of = logits_function(model)
    head = head_layer(model)
    head_ids = {id(v) for v in head.trainable_variables}
    body = [v for v in model.trainable_variables if id(v) not in head_ids]
    top = list(head.trainable_variables)
    body_optimizer, head_optimizer = keras.optimizers.Adam(recipe.body_learning_rate), keras.optimizers.Adam(recipe.learning_rate)
    embedding_on = tf.Variable(0.0 if recipe.freeze_embedding_epochs > 0 else 1.0, trainable=False)
    embedding_ids = {id(v) for v in model.get_layer("embedding").trainable_variables}
    body_optimizer.build(body)
    head_optimizer.build(top)
    sigmoid = targets.shape[1] == 2 and head.units == 1
    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, targets.shape[1]], tf.float32), tf.TensorSpec([None], tf.float32)]

    @tf.function(input_signature=spec)
    def step(ids, target, weight):
        with tf.GradientTape() as tape:
            logits = logits_of(ids, training=True)
            if sigmoid:
                losses = tf.nn.sigmoid_cross_entropy_with_logits(target[:, 1:], logits)[:, 0]
            else:
                losses = tf.nn.softmax_cross_entropy_with_logits(target, logits)
            loss = tf.reduce_sum(weight * losses) / tf.reduce_sum(weight)
        gradients = tape.gradient(loss, body + top)
        gradients = [gate(g, embedding_on) if id(v) in embedding_ids else g for g, v in zip(gradients, body + top, strict=True)]
        body_optimizer.apply_gradients(zip(gradients[: len(body)], body, strict=True))
        head_optimizer.apply_gradients(zip(gradients[len(body) :], top, strict=True))
        return loss

    rng = np.random.default_rng(recipe.seed)
    lengths = np.array([len(s) for s in sequences])
    targets, weights = targets.astype("float32"), weights.astype("float32")
    history: list[dict] = []
    best = (-math.inf, None, -1)
    for epoch in range(1, recipe.epochs + 1):
        started, cpu = time.perf_counter(), time.process_time()
        embedding_on.assign(1.0 if epoch > recipe.freeze_embedding_epochs else 0.0)
        members = batches(lengths, recipe.batch_size, rng)
        progress = keras.utils.Progbar(len(members), stateful_metrics=["loss"], verbose=1 if sys.stderr.isatty() else 2)
        total = 0.0
        for i, rows in enumerate(members, start=1):
            loss = float(step(pad([sequences[j] for j in rows]), targets[rows], weights[rows]))
            total += loss
            progress.update(i, [("loss", total / i)])
        y, probabilities = validate(model)
        row = {
            "epoch": epoch,
            "loss": round(total / len(members), 4),
            "val_accuracy": round(float((scores.as_matrix(probabilities).argmax(1) == y).mean()), 4),
            "val_macro_f1": round(scores.macro_f1(y, probabilities), 4),
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
        }
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, recipe.epochs, row)
        if row["val_macro_f1"] > best[0]:
            best = (row["val_macro_f1"], [w.numpy() for w in model.weights], epoch)
        elif epoch - best[2] >= recipe.patience:
            log.info("validation macro-F1 has not improved for %d epochs: stopping", recipe.patience)
            break
    for variable, value in zip(model.weights, best[1], strict=True):
        variable.assign(value)
    for row in history:
        row["kept"] = row["epoch"] == best[2]
    return history
