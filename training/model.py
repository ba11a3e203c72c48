"""The Keras network and the length-bucketed batches it trains on."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Architecture:
    """Hyper-parameters of the network; recorded in the artifact's metadata."""

    vocab_size: int
    embedding_dim: int = 128
    lstm_units: int = 64
    bidirectional: bool = True
    dropout: float = 0.3
    recurrent_dropout: float = 0.0
    pooling: str = "last"  # "last": final LSTM state; "mean": masked mean of every step's output
    classes: int = 1  # 1: one sigmoid unit (two labels); k >= 3: k logits and their softmax (k labels)


def build_model(arch: Architecture, embedding_init: np.ndarray | None = None) -> keras.Model:
    """``Embedding → (Bi)LSTM → Dense(1, sigmoid)``, masking padding id 0.

    Masking makes a text's score independent of how far its batch is padded,
    which the serving tier relies on when it batches unrelated requests.

    With ``arch.classes = k > 1`` the head is ``Dense(k)`` named ``logits`` then a
    softmax named ``probabilities``: the logits stay reachable by name, for the
    serving graph and for training on them.
    """
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    initializer = keras.initializers.Constant(embedding_init) if embedding_init is not None else "uniform"
    x = keras.layers.Embedding(arch.vocab_size, arch.embedding_dim, mask_zero=True, embeddings_initializer=initializer, name="embedding")(
        ids
    )
    x = keras.layers.SpatialDropout1D(arch.dropout, name="embedding_dropout")(x)
    every_step = arch.pooling != "last"
    lstm = keras.layers.LSTM(arch.lstm_units, recurrent_dropout=arch.recurrent_dropout, return_sequences=every_step, name="lstm")
    x = keras.layers.Bidirectional(lstm, name="bilstm")(x) if arch.bidirectional else lstm(x)
    if every_step:
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x)
    x = keras.layers.Dropout(arch.dropout, name="dropout")(x)
    if arch.classes > 1:
        logits = keras.layers.Dense(arch.classes, name="logits")(x)
        return keras.Model(ids, keras.layers.Activation("softmax", name="probabilities")(logits), name="sentiment_lstm")
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(ids, probability, name="sentiment_lstm")


class BucketedBatches:
    """Batches of similar-length sequences, each padded only to its own longest.

    Reviews run from 10 to 1,000+ tokens; padding every batch to the maximum
    would make most of the LSTM's steps padding. Sorting within shuffled pools
    of ``pool`` batches keeps batches random yet tight. `dataset()` declares the
    time axis as variable: Keras would otherwise guess a fixed width from the
    first batches it sees.
    """

    def __init__(self, sequences: list[list[int]], labels: list[int], batch_size: int, shuffle: bool, seed: int, pool: int = 50):
        self.sequences = sequences
        self.labels = np.asarray(labels, dtype="float32")
        self.lengths = np.array([len(s) for s in sequences])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pool = pool
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.sequences) / self.batch_size)

    def batch_members(self) -> list[np.ndarray]:
        order = self.rng.permutation(len(self.sequences)) if self.shuffle else np.arange(len(self.sequences))
        pool_size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), pool_size):
            chunk = order[start : start + pool_size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for members in self.batch_members():
            yield pad([self.sequences[i] for i in members]), self.labels[members]

    def dataset(self) -> tf.data.Dataset:
        spec = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.float32))
        data = tf.data.Dataset.from_generator(self.__iter__, output_signature=spec)
        return data.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)


def pad(sequences: list[list[int]]) -> np.ndarray:
    """Right-pad with id 0 to the longest sequence of this batch."""
    out = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype="int32")
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = seq
    return out
