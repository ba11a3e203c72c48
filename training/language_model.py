"""Language-model pre-training of the BiLSTM on unlabelled reviews (Dai & Le 2015; Miyato, Dai & Goodfellow 2017).

Why: the classifier's LSTMs otherwise start from random weights and learn to
read only from 22,500 labelled reviews (and the teacher's guesses on the rest).
Predicting the next word of 70,000+ reviews teaches them to carry what a text
said so far (negation, contrast, who is praised) before any label is seen.

The forward LSTM learns to predict each next word, the backward LSTM each
previous one (it reads the text reversed, as ``Bidirectional``'s backward layer
does), both on the shared embedding; the vocabulary-wide softmax is estimated
by sampling (``tf.nn.sampled_softmax_loss``), which makes an epoch over 17
million words a matter of minutes on two cores. The softmax layers are thrown
away: the classifier takes the embedding and the two LSTMs' weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from training.model import pad

log = logging.getLogger("training.language_model")


@dataclass
class PretrainedReader:
    """What the classifier starts from: the embedding matrix and each LSTM's ``[kernel, recurrent_kernel, bias]``."""

    embedding: np.ndarray
    forward: list[np.ndarray]
    backward: list[np.ndarray]
    sampled_loss: float  # mean over the last epoch's batches and both directions; below the full softmax's cross-entropy

    def load_into(self, classifier: keras.Model) -> None:
        """Set ``classifier``'s (`training.model.build_model`, bidirectional) embedding and LSTM weights."""
        classifier.get_layer("embedding").set_weights([self.embedding])
        bilstm = classifier.get_layer("bilstm")
        bilstm.forward_layer.set_weights(self.forward)
        bilstm.backward_layer.set_weights(self.backward)


def chunks(sequences: list[list[int]], length: int) -> list[list[int]]:
    """Each sequence cut into runs of ``length + 1`` ids (the last one shorter), overlapping by one id so that
    every id but a text's first is once a target; runs of one id teach nothing and are left out."""
    out = []
    for sequence in sequences:
        for start in range(0, max(len(sequence) - 1, 0), length):
            out.append(sequence[start : start + length + 1])
    return [c for c in out if len(c) > 1]


def pretrain(
    sequences: list[list[int]],
    vocab_size: int,
    embedding: np.ndarray,
    units: int,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    length: int = 100,
    sampled: int = 512,
    learning_rate: float = 2e-3,
) -> PretrainedReader:
    """Train a forward and a backward LSTM language model on ``sequences`` (token ids, 0 = padding)."""
    keras.utils.set_random_seed(seed)
    embed = keras.layers.Embedding(vocab_size, embedding.shape[1], mask_zero=True)
    forward = keras.layers.LSTM(units, return_sequences=True)
    backward = keras.layers.LSTM(units, return_sequences=True)
    embed.build((None, None))
    embed.set_weights([embedding])
    forward.build((None, None, embedding.shape[1]))
    backward.build((None, None, embedding.shape[1]))
    softmax = {
        direction: (
            tf.Variable(tf.random.normal([vocab_size, units], stddev=units**-0.5, seed=seed), name=f"{direction}_softmax_weights"),
            tf.Variable(tf.zeros([vocab_size]), name=f"{direction}_softmax_biases"),
        )
        for direction in ("forward", "backward")
    }
    variables = [*embed.trainable_variables, *forward.trainable_variables, *backward.trainable_variables]
    variables += [v for pair in softmax.values() for v in pair]
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=1.0)
    optimizer.build(variables)  # its slots exist before the step is traced

    def direction_loss(lstm, weights, biases, run):
        inputs, targets = run[:, :-1], run[:, 1:]
        states = lstm(embed(inputs), mask=tf.not_equal(inputs, 0))
        real = tf.not_equal(targets, 0)
        return tf.reduce_mean(
            tf.nn.sampled_softmax_loss(
                weights,
                biases,
                labels=tf.cast(tf.boolean_mask(targets, real)[:, None], tf.int64),
                inputs=tf.boolean_mask(states, real),
                num_sampled=min(sampled, vocab_size // 2),  # log-uniform: the vocabulary is ordered by frequency
                num_classes=vocab_size,
                seed=seed,
            )
        )

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)
    def step(run):
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(run, 0), tf.int32), axis=1)
        reversed_run = tf.reverse_sequence(run, lengths, seq_axis=1, batch_axis=0)  # real ids reversed, padding stays last
        with tf.GradientTape() as tape:
            loss = direction_loss(forward, *softmax["forward"], run) + direction_loss(backward, *softmax["backward"], reversed_run)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss / 2

    runs = chunks(sequences, length)
    lengths = np.array([len(r) for r in runs])
    rng = np.random.default_rng(seed)
    mean_loss = float("nan")
    for epoch in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(len(runs))
        order = order[np.argsort(lengths[order], kind="stable")]  # batches of like lengths (most are full runs), then shuffled
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        losses = [float(step(tf.constant(pad([runs[i] for i in members])))) for members in batches]
        mean_loss = float(np.mean(losses))
        log.info(
            "language model epoch %d/%d: %d runs of up to %d words, sampled loss %.3f, %.0fs",
            epoch + 1,
            epochs,
            len(runs),
            length,
            mean_loss,
            time.perf_counter() - started,
        )
    return PretrainedReader(embed.get_weights()[0], forward.get_weights(), backward.get_weights(), mean_loss)
