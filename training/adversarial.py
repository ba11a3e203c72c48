"""Adversarial and virtual adversarial training of the movie model (Miyato, Dai & Goodfellow, ICLR 2017).

Why: a 64-unit BiLSTM trained on 22,500 labelled reviews overfits the words it
has seen in them; making its answer stable under the worst small change of its
word vectors is a regulariser that costs nothing at serving time (the exported
graph is the same network).

* **Adversarial** (``adversarial_weight``): per text, the gradient of its loss
  with respect to its word vectors points to the change that hurts most; the
  text is read again with its word vectors moved ``epsilon`` along that
  direction (L2 over the whole text), and that loss is added.
* **Virtual adversarial** (``virtual_weight``): the same without a target. A
  random direction, refined by one power iteration, finds the change that
  moves the model's own prediction most; the KL divergence between the clean
  and the moved prediction is added. It needs no label, so it also uses the
  unlabelled reviews the batches carry (their targets are the teacher's).

``epsilon`` is a multiple of the word vectors' root-mean-square norm, read
from the embedding at each step: the word2vec start and training change that
norm, and a fixed absolute size would mean something else at each.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf


@dataclass(frozen=True)
class Perturbations:
    """The extra losses and their sizes; all zero: plain training."""

    adversarial_weight: float = 0.0
    virtual_weight: float = 0.0
    epsilon: float = 1.0  # the perturbation's L2 norm over a text, in word-vector norms
    xi: float = 1e-6  # the first random step of the power iteration, same unit

    @property
    def active(self) -> bool:
        return self.adversarial_weight > 0 or self.virtual_weight > 0


def _unit(direction: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``direction`` over each text's real steps, scaled to unit L2 norm per text (padding stays 0)."""
    direction = direction * tf.cast(mask, direction.dtype)[:, :, None]
    norm = tf.sqrt(tf.reduce_sum(tf.square(direction), axis=[1, 2], keepdims=True) + 1e-12)
    return direction / norm


def _bernoulli_kl(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    eps = 1e-7
    p = tf.clip_by_value(p, eps, 1 - eps)
    q = tf.clip_by_value(q, eps, 1 - eps)
    return tf.reduce_mean(p * tf.math.log(p / q) + (1 - p) * tf.math.log((1 - p) / (1 - q)))


class PerturbedTraining(keras.Model):
    """Trains ``classifier`` (`training.model.build_model`, one sigmoid output) with `Perturbations`' extra losses.

    Its weights are the classifier's, so early stopping's restore and the export
    of ``classifier`` see what this model trained. Validation runs the plain classifier.
    """

    def __init__(self, classifier: keras.Model, perturbations: Perturbations, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.perturbations = perturbations
        self.embedding = classifier.get_layer("embedding")
        self.body = [classifier.get_layer("embedding_dropout"), classifier.get_layer("bilstm")]
        names = {layer.name for layer in classifier.layers}
        self.pool = classifier.get_layer("mean_over_time") if "mean_over_time" in names else None
        self.head = [classifier.get_layer("dropout"), classifier.get_layer("probability")]

    def call(self, ids, training=False):
        return self.classifier(ids, training=training)

    def from_vectors(self, vectors: tf.Tensor, mask: tf.Tensor, training: bool) -> tf.Tensor:
        """The classifier's probability from word vectors instead of ids: the layers of `build_model` in order."""
        x = self.body[0](vectors, training=training)
        x = self.body[1](x, mask=mask, training=training)
        if self.pool is not None:
            x = self.pool(x, mask=mask)
        x = self.head[0](x, training=training)
        return tf.reshape(self.head[1](x), [-1])

    def train_step(self, data):
        ids, target = data
        target = tf.reshape(tf.cast(target, tf.float32), [-1])
        mask = tf.not_equal(ids, 0)
        settings = self.perturbations
        weights = self.embedding.embeddings
        epsilon = settings.epsilon * tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(weights), axis=1)))
        with tf.GradientTape() as tape:
            vectors = self.embedding(ids)
            with tf.GradientTape() as probe:
                probe.watch(vectors)
                probability = self.from_vectors(vectors, mask, training=True)
                loss = keras.losses.binary_crossentropy(target[:, None], probability[:, None])
                loss = tf.reduce_mean(loss)
            total = loss
            if settings.adversarial_weight > 0:
                with tape.stop_recording():
                    worst = tf.stop_gradient(_unit(probe.gradient(loss, vectors), mask))
                moved = self.from_vectors(vectors + epsilon * worst, mask, training=True)
                adversarial = tf.reduce_mean(keras.losses.binary_crossentropy(target[:, None], moved[:, None]))
                total += settings.adversarial_weight * adversarial
            if settings.virtual_weight > 0:
                clean = tf.stop_gradient(probability)
                with tape.stop_recording():
                    start = settings.xi * epsilon * _unit(tf.random.normal(tf.shape(vectors)), mask)
                    with tf.GradientTape() as power:
                        power.watch(start)
                        divergence = _bernoulli_kl(clean, self.from_vectors(tf.stop_gradient(vectors) + start, mask, training=True))
                    direction = tf.stop_gradient(_unit(power.gradient(divergence, start), mask))
                moved = self.from_vectors(vectors + epsilon * direction, mask, training=True)
                total += settings.virtual_weight * _bernoulli_kl(clean, moved)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(total, variables), variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(target, probability)
        return self.get_metrics_result()
