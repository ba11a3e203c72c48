"""Write a trained network as a TensorFlow Serving SavedModel with three signatures.

* ``serving_default``: int32 token ids ``[batch, time]`` (right-padded with 0)
  → ``probability`` float32 ``[batch]``, through the fused XLA graph of
  `training.serving_graph` (the Keras graph for a model it does not cover). What
  inference workers on a CPU call.
* ``serving_gpu``: the same through Keras' cuDNN LSTM (``CudnnRNNV3``): what a
  worker on a GPU calls. It only runs where there is a GPU; the artifact still
  loads, and its other signatures run, without one.
* ``predict_text``: strings ``[batch]`` → ``probability`` (plus the ``token_ids``
  it read, ``n_tokens`` and the ``windows`` it read them in), the tokenizer and
  the long-text policy (`service.tokenizer.LongTextPolicy`: windows scored side
  by side, their scores combined) rebuilt from TensorFlow ops, so that the
  artifact alone serves raw text exactly as the service does (TensorFlow
  Serving, ``tf.saved_model.load``); scored by ``serving_default``'s graph.

``metadata.json`` gets a ``serving`` entry saying which signature is for which
device, and the shapes the CPU graph compiles for (the worker compiles them all
before it takes traffic), the ``long_texts`` policy, the ``labels`` in output
order and the ``head``.

A network of k ≥ 3 labels (`training.model` with ``classes=k``: k logits, then
softmax) has the same signatures with k-wide outputs instead:
``serving_default`` / ``serving_gpu`` → ``probabilities`` and ``logits``
``[batch, k]``; ``explain`` → those and ``contributions`` ``[batch, time, k]``
(each class's logit's gradient × input); ``predict_text`` → ``probabilities``
``[batch, k]``, ``label`` (the likeliest label's name, bytes), ``token_ids``,
``n_tokens``, ``windows``; a long text's windows combined by the mean of their
logits, then softmax (the k-label form of ``mean_logit``, the only aggregate
they take). Two-label networks keep the outputs above unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from service import tokenizer as tk
from training.serving_graph import DEFAULT_BATCH_BUCKETS, FusedLSTM, UnsupportedModel
from training.signatures import describe_signatures
from training.window_ops import combine_window_logits, combine_windows, cut_middle, split_windows

log = logging.getLogger(__name__)

CPU_SIGNATURE = "serving_default"
GPU_SIGNATURE = "serving_gpu"
EXPLAIN_SIGNATURE = "explain"

TOKEN_IDS_SPEC = tf.TensorSpec([None, None], tf.int32, name="token_ids")
TEXTS_SPEC = tf.TensorSpec([None], tf.string, name="texts")


@contextlib.contextmanager
def keras_cudnn(enabled: bool) -> Iterator[None]:
    """Make Keras trace its LSTMs with (or without) cuDNN, whatever devices this machine has.

    Keras 3's TensorFlow backend chooses at trace time: ``LSTM.inner_loop`` calls
    ``keras/src/backend/tensorflow/rnn.py::lstm``, which takes the ``CudnnRNNV3``
    path only if ``cudnn_ok`` → ``_is_gpu_available()`` (a logical GPU exists
    now). A graph traced on a CPU-only machine has no cuDNN path at all, and one
    traced on a GPU machine has nothing else (``CudnnRNNV3`` has no CPU kernel).
    So the answer is forced while one signature is traced. ``_is_gpu_available``
    is private: keras is pinned in requirements.txt, and
    tests/test_serving_graph.py checks which signature holds ``CudnnRNNV3``.
    """
    rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # the module: the package also exports a function `rnn`
    original = rnn._is_gpu_available
    rnn._is_gpu_available = lambda: enabled
    try:
        yield
    finally:
        rnn._is_gpu_available = original


def is_categorical(model: keras.Model) -> bool:
    """Whether ``model`` ends in k logits and their softmax (`training.model.build_model` with ``classes > 1``)."""
    return any(layer.name == "logits" for layer in model.layers)


class SentimentModule(tf.Module):
    """What gets saved: the network, its fused CPU graph, the vocabulary table and the tokenizer config."""

    def __init__(
        self,
        model: keras.Model,
        tokenizer: tk.Tokenizer,
        asset_dir: Path,
        batch_buckets=DEFAULT_BATCH_BUCKETS,
        labels: list[str] | None = None,
    ):
        super().__init__(name="sentiment")
        tokenizer.save(asset_dir)
        self.long_texts = tokenizer.long_texts
        self.model = model
        self.categorical = is_categorical(model)
        if self.categorical:
            self.classes = int(model.get_layer("logits").units)
            if labels is None or len(labels) != self.classes:
                raise ValueError(f"a network of {self.classes} logits needs {self.classes} labels, got {labels}")
            if self.long_texts.aggregate != "mean_logit":
                raise ValueError(f"k labels combine windows by their mean logit, not {self.long_texts.aggregate!r}")
            # The same layers and weights, stopped before the softmax (for serving_gpu's logits).
            self.logits_model = keras.Model(model.input, model.get_layer("logits").output)
            self.labels = tf.constant(list(labels), tf.string)
        try:
            self.fused = FusedLSTM(model, tokenizer.max_length, batch_buckets)
        except UnsupportedModel as exc:
            log.warning("serving_default falls back to the Keras graph: %s", exc)
            self.fused = None
        self.max_length = tokenizer.max_length
        self.head_length = tokenizer.head_length
        self.vocab_asset = tf.saved_model.Asset(str(asset_dir / tk.VOCAB_FILE))
        self.config_asset = tf.saved_model.Asset(str(asset_dir / tk.CONFIG_FILE))
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_asset,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=tk.OOV_ID)

    @tf.function(input_signature=[TOKEN_IDS_SPEC])
    def serve_ids(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.fused is not None:
            if self.categorical:
                probabilities, logits = self.fused.serve(token_ids)
                return {"probabilities": probabilities, "logits": logits}
            return {"probability": self.fused.serve(token_ids)}
        with keras_cudnn(False):
            return self.serve_keras(token_ids)

    @tf.function(input_signature=[TOKEN_IDS_SPEC])
    def explain(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """``probability``, ``logit`` and ``contributions`` ``[batch, time]``: gradient × input of each token's word
        vector (how much, to first order, the token's presence adds to the logit; 0 on padding), from the fused loop.
        With k labels: ``probabilities``, ``logits`` ``[batch, k]`` and ``contributions`` ``[batch, time, k]``."""
        probability, logit, contributions = self.fused.serve_explanation(token_ids)
        if self.categorical:
            return {"probabilities": probability, "logits": logit, "contributions": contributions}
        return {"probability": probability, "logit": logit, "contributions": contributions}

    @tf.function(input_signature=[TOKEN_IDS_SPEC])
    def serve_gpu(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """Keras' graph; traced under ``keras_cudnn(True)`` by `export` (cuDNN needs right-padded ids, as the tokenizer gives)."""
        return self.serve_keras(token_ids)

    def serve_keras(self, token_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.categorical:
            logits = tf.cast(self.logits_model(token_ids, training=False), tf.float32)
            return {"probabilities": tf.nn.softmax(logits), "logits": logits}
        probability = self.model(token_ids, training=False)
        return {"probability": tf.reshape(tf.cast(probability, tf.float32), [-1])}

    def serving_metadata(self) -> dict:
        """What a worker needs to know about the signatures: ``metadata.json``'s ``serving`` entry."""
        signatures = {"cpu": CPU_SIGNATURE, "gpu": GPU_SIGNATURE}
        if self.fused is None:
            return {"graph": "keras", "max_length": self.max_length, "signatures": signatures}
        described = {
            "graph": "fused-xla",
            "max_length": self.max_length,
            "batch_buckets": list(self.fused.batch_buckets),
            "signatures": signatures,
        }
        described["explain_signature"] = EXPLAIN_SIGNATURE
        return described

    @tf.function(input_signature=[TEXTS_SPEC])
    def predict_text(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        """`service.tokenizer.Tokenizer.encode` and `service.tokenizer.combine`, in TensorFlow ops."""
        ids = self.token_ids(texts)
        n_tokens = tf.cast(ids.row_lengths(), tf.int32)
        policy = self.long_texts
        if policy.kind == "windows":
            limit, head, window = policy.window * policy.max_windows, policy.window * policy.max_windows // 2, policy.window
        else:
            limit, head, window = self.max_length, self.head_length, self.max_length
        kept = cut_middle(ids, n_tokens, limit, head)
        windows, owner, n_windows = split_windows(kept, window)
        if self.categorical:
            scored = self.serve_ids(windows.to_tensor(default_value=tk.PAD_ID))
            probabilities = combine_window_logits(scored["probabilities"], scored["logits"], owner, n_windows)
            return {
                "probabilities": probabilities,
                "label": tf.gather(self.labels, tf.argmax(probabilities, axis=1, output_type=tf.int32)),
                "token_ids": kept.to_tensor(default_value=tk.PAD_ID),
                "n_tokens": n_tokens,
                "windows": n_windows,
            }
        p = self.serve_ids(windows.to_tensor(default_value=tk.PAD_ID))["probability"]
        return {
            "probability": combine_windows(p, owner, n_windows, tf.cast(windows.row_lengths(), tf.float32), policy.aggregate),
            "token_ids": kept.to_tensor(default_value=tk.PAD_ID),
            "n_tokens": n_tokens,
            "windows": n_windows,
        }

    def token_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Rules 1–6 of `service.tokenizer` in string ops: int32 ids ``[batch, (tokens)]``, one OOV id for a text without any."""
        x = tf.strings.lower(texts, encoding="utf-8")
        x = tf.strings.regex_replace(x, tk.BREAK_PATTERN, " ")
        x = tf.strings.regex_replace(x, tk.APOSTROPHE_PATTERN, "")
        x = tf.strings.regex_replace(x, tk.RE2_SEPARATOR_PATTERN, " ")
        x = tf.strings.regex_replace(x, tk.RE2_BANG_PATTERN, r" \1 ")
        ids = tf.cast(tf.ragged.map_flat_values(self.table.lookup, tf.strings.split(x)), tf.int32)
        empty = tf.equal(ids.row_lengths(), 0)
        oov = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], tk.OOV_ID), tf.cast(empty, tf.int64))
        return tf.concat([ids, oov], axis=1)


def next_version(model_dir: Path) -> int:
    """TensorFlow Serving versions are integers; a new export takes the next one."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def check_agreement(module: SentimentModule, rows: int = 70, seed: int = 0, tolerance: float = 1e-5) -> float:
    """Largest difference between ``serving_default``'s graph and the Keras model on random right-padded ids.

    Raises instead of exporting a serving graph that does not compute the network it was built from.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, module.max_length + 1, size=rows)
    ids = np.zeros((rows, module.max_length), dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, module.model.get_layer("embedding").input_dim, size=length)
    with keras_cudnn(False):
        expected = module.model(ids, training=False).numpy()
    outputs = module.serve_ids(tf.constant(ids))
    if module.categorical:
        served = outputs["probabilities"].numpy()
        logits = module.logits_model(ids, training=False).numpy()
        # Logits are compared relative to their size (they are not bounded as probabilities are).
        relative = np.abs(outputs["logits"].numpy() - logits) / (1 + np.abs(logits))
        difference = max(float(np.abs(served - expected).max()), float(relative.max()))
    else:
        difference = float(np.abs(outputs["probability"].numpy() - expected.reshape(-1)).max())
    if not difference <= tolerance:
        raise RuntimeError(f"serving graph disagrees with the Keras model by {difference:.2e} (> {tolerance:.0e})")
    return difference


def head_metadata(model: keras.Model, metadata: dict) -> dict:
    """``labels`` (output order) and ``head`` for ``metadata.json``: the labels from ``metadata`` (``labels``, else the
    two-label ``label_names``), checked against the network's outputs."""
    labels = list(metadata.get("labels") or metadata.get("label_names") or ())
    if is_categorical(model):
        classes, kind = int(model.get_layer("logits").units), "softmax"
    else:
        classes, kind = 2, "sigmoid"
    if len(labels) != classes:
        raise ValueError(f"a {kind} head of {classes} labels, but the metadata names {labels}")
    if kind == "sigmoid" and list(metadata.get("label_names", labels)) != labels:
        raise ValueError(f"label_names {metadata.get('label_names')} and labels {labels} disagree")
    return {"labels": labels, "head": {"kind": kind, "classes": classes}}


def export(model: keras.Model, tokenizer: tk.Tokenizer, destination: Path, metadata: dict) -> Path:
    """Write ``destination`` (``.../<name>/<version>``) atomically: a reader never sees half a model.

    ``metadata`` is written to ``metadata.json`` with the ``serving`` entry added, and ``labels`` and ``head``
    (`head_metadata`).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    # A copy without the optimizer (clone_model would carry it over): Adam's two moments per weight would triple the artifact.
    inference_model = keras.Model.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    head = head_metadata(inference_model, metadata)
    try:
        with tempfile.TemporaryDirectory() as assets:
            module = SentimentModule(inference_model, tokenizer, Path(assets), labels=head["labels"])
            difference = check_agreement(module)
            log.info("serving graph %s agrees with the Keras model within %.1e", "fused" if module.fused else "Keras", difference)
            with keras_cudnn(True):
                gpu = module.serve_gpu.get_concrete_function()
            signatures = {
                CPU_SIGNATURE: module.serve_ids.get_concrete_function(),
                GPU_SIGNATURE: gpu,
                "predict_text": module.predict_text.get_concrete_function(),
            }
            if module.fused is not None:
                signatures[EXPLAIN_SIGNATURE] = module.explain.get_concrete_function()
            tf.saved_model.save(module, str(staging), signatures=signatures)
        staging.chmod(0o755)  # mkdtemp makes it private
        metadata = {
            **metadata,
            **head,
            "serving": module.serving_metadata(),
            "long_texts": module.long_texts.as_metadata(),
            "signature_defs": describe_signatures(staging),
        }
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
