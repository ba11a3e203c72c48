"""Write a trained network as a TensorFlow Serving SavedModel with two signatures.

* ``serving_default``: int32 token ids ``[batch, time]`` (0 = padding) →
  ``probability`` float32 ``[batch]``. The inference workers call this one.
* ``predict_text``: strings ``[batch]`` → ``probability`` (plus the ``token_ids``
  and ``n_tokens`` it computed), the tokenizer rebuilt from TensorFlow string
  ops so that the artifact alone serves raw text (TensorFlow Serving,
  ``tf.saved_model.load``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from service import tokenizer as tk

TOKEN_IDS_SPEC = tf.TensorSpec([None, None], tf.int32, name="token_ids")
TEXTS_SPEC = tf.TensorSpec([None], tf.string, name="texts")


class SentimentModule(tf.Module):
    """What gets saved: the network, the vocabulary table and the tokenizer config."""

    def __init__(self, model: keras.Model, tokenizer: tk.Tokenizer, asset_dir: Path):
        super().__init__(name="sentiment")
        tokenizer.save(asset_dir)
        self.model = model
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
        probability = self.model(token_ids, training=False)
        return {"probability": tf.reshape(tf.cast(probability, tf.float32), [-1])}

    @tf.function(input_signature=[TEXTS_SPEC])
    def predict_text(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        token_ids, n_tokens = self.encode(texts)
        outputs = self.serve_ids(token_ids)
        return {**outputs, "token_ids": token_ids, "n_tokens": n_tokens}

    def encode(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`service.tokenizer.Tokenizer.encode`, in string ops (see its docstring for the rules)."""
        x = tf.strings.lower(texts, encoding="utf-8")
        x = tf.strings.regex_replace(x, tk.BREAK_PATTERN, " ")
        x = tf.strings.regex_replace(x, tk.APOSTROPHE_PATTERN, "")
        x = tf.strings.regex_replace(x, tk.RE2_SEPARATOR_PATTERN, " ")
        x = tf.strings.regex_replace(x, tk.RE2_BANG_PATTERN, r" \1 ")
        tokens = tf.strings.split(x)
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        n_tokens = tf.cast(ids.row_lengths(), tf.int32)

        # Head + tail truncation: row r keeps positions [0, head) and [n - tail, n).
        kept = tf.minimum(n_tokens, self.max_length)
        positions = tf.ragged.range(kept)
        rows = positions.value_rowids()
        skip = tf.gather(tf.maximum(n_tokens - self.max_length, 0), rows)
        source = tf.where(positions.flat_values < self.head_length, positions.flat_values, positions.flat_values + skip)
        flat = tf.gather(ids.flat_values, tf.gather(tf.cast(ids.row_starts(), tf.int32), rows) + source)
        kept_ids = tf.RaggedTensor.from_row_lengths(tf.cast(flat, tf.int32), tf.cast(kept, tf.int64))

        # A text without tokens becomes a single OOV step.
        dense = kept_ids.to_tensor(default_value=tk.PAD_ID)
        dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])  # at least one column
        first = tf.where(kept == 0, tk.OOV_ID, dense[:, 0])
        dense = tf.concat([first[:, None], dense[:, 1:]], axis=1)
        return dense, tf.maximum(n_tokens, 1)


def next_version(model_dir: Path) -> int:
    """TensorFlow Serving versions are integers; a new export takes the next one."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export(model: keras.Model, tokenizer: tk.Tokenizer, destination: Path, metadata: dict) -> Path:
    """Write ``destination`` (``.../<name>/<version>``) atomically: a reader never sees half a model."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    # A copy without the optimizer (clone_model would carry it over): Adam's two moments per weight would triple the artifact.
    inference_model = keras.Model.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    try:
        with tempfile.TemporaryDirectory() as assets:
            module = SentimentModule(inference_model, tokenizer, Path(assets))
            signatures = {
                "serving_default": module.serve_ids.get_concrete_function(),
                "predict_text": module.predict_text.get_concrete_function(),
            }
            tf.saved_model.save(module, str(staging), signatures=signatures)
        staging.chmod(0o755)  # mkdtemp makes it private
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
