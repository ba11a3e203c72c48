"""The CPU serving graph of the (Bi)LSTM: the same function as the Keras model, at a quarter of its CPU or less.

Built from a trained model of `training.model.build_model`'s family
(``Embedding → LSTM or Bidirectional(LSTM) → mean over steps or final state →
Dense(1, sigmoid)``, or ``→ Dense(k) "logits" → softmax`` for k labels; dropout
layers are the identity at inference):

* **Folded input projection.** A step's input term ``E[id] @ W_in + b`` depends
  on the token id alone, so it is precomputed for the whole vocabulary: one gate
  table ``[vocab, 4 × units]`` per direction, and a step gathers a row instead of
  multiplying. It costs 2 × 30,000 × 256 floats (61 MB) on v2 and pays for
  itself (1.0 against 0.6 ms per review at batch 32 on one thread).
* **Both directions in one loop**, stacked on a leading axis ``D`` (1 or 2): at
  step ``t`` the forward direction reads position ``t`` and the backward one
  position ``last - t`` of its row, both from zero state. On right-padded rows
  this is what Keras' masked backward LSTM computes (it reverses the padded row,
  and its state stays zero through the padding). Steps on padding (id 0) keep
  the state, as Keras' masked steps do.
* **Pooling without realignment**: the masked mean is a sum, so each direction's
  outputs are added up in the loop in whatever order it visits positions.
* **XLA with a bounded set of shapes**: the loop runs ``max(length)`` steps, a
  trip count read at run time, so ids padded to a fixed width cost no more than
  unpadded ones, and only the batch size is a shape XLA compiles for. `serve`
  pads the batch up to the next of ``batch_buckets`` (larger batches run as
  chunks of the largest bucket) and the time axis to ``max_length``; so any
  caller meets at most ``len(batch_buckets)`` compilations, which a worker pays
  for before it takes traffic. Wider inputs take the same loop without XLA.

**Explanations** (`explanation`): gradient × input on each token's word
vector, ``∂logit/∂e_t · e_t``. A word vector enters the network only through
the input projection ``x = e @ W_in + b`` (the gate table row), so
``∂logit/∂e · e = ∂logit/∂x · (x - b)``: the forward loop keeps each step's gate
pre-activations and cell state, and a written-out backward loop
(`FusedLSTM._backward`) carries the gradient back through the steps, giving
each position its value as it passes (about 2.8 times a prediction's model
CPU, measured; automatic differentiation of the loop cost 80 times). Chosen
over the additive split of the mean-pooled logit (free, but far less faithful
to what deleting a word does: `training.explanations` measures both against
occlusion).

**k labels** (a ``logits`` layer of k units, then softmax: `training.model`
with ``classes=k``): the same loop; the head gives k logits and their softmax,
and the backward pass runs for every class at once, the class folded into the
batch axis (rows ``k × B``), so each class's logit gets its own gradient × input
(``[batch, width, k]``) for about k times the backward work. The one-logit
(sigmoid) graph is built by the same code with no class axis at all: its ops,
and so its numbers, are those of the versions before k labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

# Batch sizes compiled for. A call costs about (2 + texts) texts' worth of work a step, so above a few texts padding rows
# cost in proportion. Neighbours at most 1.5 apart: ~15 % of padded work on average (46 % at worst) for 12 compiles of
# ~0.7 s of CPU each at a worker's start. Powers of two: 8 compiles, +31 %; at most 1.25 apart: 20 compiles, +7 %.
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)

TOKEN_IDS_SPEC = tf.TensorSpec([None, None], tf.int32, name="token_ids")


class UnsupportedModel(ValueError):
    """The Keras model is not of the family this graph reproduces."""


class _Trace(NamedTuple):
    """What the forward loop kept of every step ``t`` for the backward pass, per direction ``d`` and row ``b``."""

    z: tf.TensorArray  # [D, B, 4u]: the gates' pre-activations
    c_prev: tf.TensorArray  # [D, B, u]: the cell state the step started from
    positions: tf.TensorArray  # [D, B]: the position of the row each direction read
    valid: tf.TensorArray  # [D, B]: False where that position is padding (the state was carried over)
    steps: tf.Tensor  # how many steps ran


def _layer_or_none(model: keras.Model, name: str) -> keras.layers.Layer | None:
    try:
        return model.get_layer(name)
    except ValueError:
        return None


class FusedLSTM(tf.Module):
    """Weights rearranged for the fused loop, and the functions that run it."""

    def __init__(self, model: keras.Model, max_length: int, batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS):
        super().__init__(name="fused_lstm")
        if list(batch_buckets) != sorted(set(batch_buckets)) or batch_buckets[0] < 1:
            raise ValueError(f"batch_buckets must be increasing positive sizes, got {batch_buckets}")
        self.max_length = int(max_length)
        self.batch_buckets = tuple(int(b) for b in batch_buckets)
        embedding = model.get_layer("embedding").get_weights()[0].astype(np.float64)
        recurrent = _layer_or_none(model, "bilstm") or model.get_layer("lstm")
        cells = [recurrent.forward_layer, recurrent.backward_layer] if isinstance(recurrent, keras.layers.Bidirectional) else [recurrent]
        if isinstance(recurrent, keras.layers.Bidirectional) and recurrent.merge_mode != "concat":
            raise UnsupportedModel(f"Bidirectional merge_mode {recurrent.merge_mode!r}: only 'concat' is supported")
        for layer in cells:
            cell = layer.cell
            if (cell.activation, cell.recurrent_activation) != (keras.activations.tanh, keras.activations.sigmoid) or not cell.use_bias:
                raise UnsupportedModel("only LSTMs with tanh, sigmoid and a bias are supported")
        self.mean_pooling = _layer_or_none(model, "mean_over_time") is not None
        if self.mean_pooling != cells[0].return_sequences:
            raise UnsupportedModel("pooling must be the masked mean of every step, or the final state")
        self.units = cells[0].units
        tables, recurrent_kernels, biases = [], [], []
        for layer in cells:
            kernel, recurrent_kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
            table = embedding @ kernel + bias  # float64, then rounded once
            table[0] = 0.0  # padding: never used (masked), kept finite
            tables.append(table.astype(np.float32))
            recurrent_kernels.append(recurrent_kernel.astype(np.float32))
            biases.append(bias.astype(np.float32))
        # Variables, not constants: they are stored once in variables/ instead of inside every function of the graph.
        self.gate_tables = tf.Variable(np.stack(tables), trainable=False, name="gate_tables")  # [D, vocab, 4u]
        self.recurrent_kernels = tf.Variable(np.stack(recurrent_kernels), trainable=False, name="recurrent_kernels")  # [D, u, 4u]
        self.input_biases = tf.Variable(np.stack(biases), trainable=False, name="input_biases")  # [D, 4u]: the b in the tables
        logits = _layer_or_none(model, "logits")
        if logits is not None and getattr(_layer_or_none(model, "probabilities"), "activation", None) is not keras.activations.softmax:
            raise UnsupportedModel("a 'logits' layer must be followed by a softmax layer named 'probabilities'")
        # One sigmoid unit ("probability"), or k logits and their softmax ("logits" → "probabilities").
        self.categorical = logits is not None
        dense_kernel, dense_bias = (logits or model.get_layer("probability")).get_weights()
        self.dense_kernel = tf.Variable(dense_kernel.astype(np.float32), trainable=False, name="dense_kernel")  # [D*u, 1 or k]
        self.dense_bias = tf.Variable(dense_bias.astype(np.float32), trainable=False, name="dense_bias")
        forward = self.probabilities if self.categorical else self.probability
        self.compiled = tf.function(forward, input_signature=[TOKEN_IDS_SPEC], jit_compile=True)
        self.plain = tf.function(forward, input_signature=[TOKEN_IDS_SPEC])
        self.compiled_explanation = tf.function(self.explanation, input_signature=[TOKEN_IDS_SPEC], jit_compile=True)
        self.plain_explanation = tf.function(self.explanation, input_signature=[TOKEN_IDS_SPEC])

    @property
    def directions(self) -> int:
        return int(self.gate_tables.shape[0])

    @property
    def classes(self) -> int:
        """How many logits the head has: 1 (sigmoid) or k (softmax)."""
        return int(self.dense_kernel.shape[1])

    def probability(self, token_ids: tf.Tensor) -> tf.Tensor:
        """P(positive) ``[batch]`` of right-padded ids ``[batch, width]``; the body of `compiled` and `plain` (one logit)."""
        return tf.sigmoid(self._logit(token_ids))

    def probabilities(self, token_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Softmax ``[batch, k]`` and logits ``[batch, k]``; the body of `compiled` and `plain` (k logits)."""
        logits = self._logit(token_ids)
        return tf.nn.softmax(logits), logits

    def explanation(self, token_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """P(positive) ``[batch]``, the logit ``[batch]``, and gradient × input of each position's word vector
        ``[batch, width]`` (0 on padding). With k logits: softmax and logits ``[batch, k]``, and each class's
        gradient × input ``[batch, width, k]``.

        The backward pass is written out (`_backward`) rather than left to automatic differentiation: the
        gradient of the loop's per-step gathers would add a tensor the size of the whole input at every step
        (~80 times a prediction's cost, measured); written out, a step's gradient goes straight to the
        one position it read. Rows are independent: a text's weights do not depend on its batch-mates.
        """
        counts = tf.reduce_sum(tf.cast(token_ids != 0, tf.int32), axis=1)
        pooled, last_state, _, trace = self._run(token_ids, keep_trace=True)
        logit = self._head(pooled, last_state, counts)
        probability = tf.nn.softmax(logit) if self.categorical else tf.sigmoid(logit)
        return probability, logit, self._backward(token_ids, counts, trace)

    def _head(self, pooled: tf.Tensor, last_state: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
        """The logit ``[batch]`` (or logits ``[batch, k]``) from the loop's outputs: masked mean (or final state), then the dense layer."""
        per_direction = pooled / tf.cast(tf.maximum(counts, 1), tf.float32)[None, :, None] if self.mean_pooling else last_state
        features = tf.reshape(tf.transpose(per_direction, [1, 0, 2]), [-1, self.directions * self.units])  # Keras' concat order
        logits = tf.matmul(features, self.dense_kernel) + self.dense_bias
        return logits if self.categorical else logits[:, 0]

    def _logit(self, token_ids: tf.Tensor) -> tf.Tensor:
        pooled, last_state, counts = self._run(token_ids)[:3]
        return self._head(pooled, last_state, counts)

    def _backward(self, ids: tf.Tensor, counts: tf.Tensor, trace: _Trace) -> tf.Tensor:
        """∂logit/∂x · (x - b) at every position, back through the steps the forward loop recorded.

        Per step and direction (``x`` is the gate table row read, ``z = x + h @ R``, gates i, f, g, o):
        ``dc = dh·o·(1 - tanh²c) + dc_next``, ``dz = [dc·g·i(1-i), dc·c_prev·f(1-f), dc·i·(1-g²), dh·tanh c·o(1-o)]``,
        ``dh_prev = dz @ Rᵀ``, ``dc_prev = dc·f``; on a padding step the gradients pass through unchanged.
        The logit adds ``w_d / length`` to every valid output (mean pooling), or ``w_d`` to the final state.

        With k logits the rows are ``k × B`` (class-major: row ``c·B + b`` is class c of text b), each step's
        trace repeated for every class, and the result ``[B, width, k]``; with one logit there is no class axis.
        """
        batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
        if self.categorical:
            k = self.classes
            # The dense kernel [D·u, k] (Keras' concat order) as each direction's weights of each class: [D, k, 1, u].
            weights = tf.transpose(tf.reshape(self.dense_kernel, [self.directions, self.units, k]), [0, 2, 1])[:, :, None, :]
            lengths = tf.cast(tf.maximum(counts, 1), tf.float32)[None, None, :, None]
            every_row = tf.zeros([self.directions, k, batch, self.units])
            per_output = tf.reshape(every_row + (weights / lengths if self.mean_pooling else 0.0), [self.directions, k * batch, self.units])
            final = tf.reshape(every_row + (0.0 if self.mean_pooling else weights), [self.directions, k * batch, self.units])
            n_rows = k * batch
        else:
            weights = tf.reshape(self.dense_kernel[:, 0], [self.directions, 1, self.units])  # [D, 1, u]
            lengths = tf.cast(tf.maximum(counts, 1), tf.float32)[None, :, None]
            per_output = weights / lengths if self.mean_pooling else tf.zeros_like(weights)
            final = tf.zeros_like(weights) if self.mean_pooling else weights
            n_rows = batch

        def per_class(tensor: tf.Tensor) -> tf.Tensor:
            """A step's ``[D, B, ...]`` trace repeated for every class: ``[D, k·B, ...]`` (as it is with one logit)."""
            if not self.categorical:
                return tensor
            return tf.tile(tensor, [1, self.classes] + [1] * (tensor.shape.rank - 2))

        transposed = tf.transpose(self.recurrent_kernels, [0, 2, 1])  # [D, 4u, u]
        rows = tf.tile(tf.range(n_rows)[None, :], [self.directions, 1])  # [D, B] (or [D, k·B])
        zeros = tf.zeros([self.directions, n_rows, self.units])

        def body(t, dh, dc, contributions):
            positions = trace.positions.read(t)
            z, c_prev, valid = per_class(trace.z.read(t)), per_class(trace.c_prev.read(t)), per_class(trace.valid.read(t))
            # Recomputing the activations costs less than storing them (measured: memory traffic dominates).
            i, f, g, o = tf.split(z, 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            tanh_c = tf.tanh(f * c_prev + i * g)
            keep = valid[..., None]
            dh_out = tf.where(keep, dh + per_output, 0.0)
            dc_cell = tf.where(keep, dc, 0.0) + dh_out * o * (1 - tanh_c * tanh_c)
            dz = tf.concat(
                [dc_cell * g * i * (1 - i), dc_cell * c_prev * f * (1 - f), dc_cell * i * (1 - g * g), dh_out * tanh_c * o * (1 - o)], -1
            )
            step_ids = tf.transpose(tf.gather(ids, tf.transpose(positions), batch_dims=1))
            x = per_class(tf.gather(self.gate_tables, step_ids, batch_dims=1) - self.input_biases[:, None, :])  # e @ W_in
            value = tf.where(valid, tf.reduce_sum(dz * x, axis=-1), 0.0)  # [D, B]
            contributions = tf.tensor_scatter_nd_add(
                contributions, tf.reshape(tf.stack([rows, per_class(positions)], -1), [-1, 2]), tf.reshape(value, [-1])
            )
            dh = tf.where(keep, tf.matmul(dz, transposed), dh)
            dc = tf.where(keep, dc_cell * f, dc)
            return t - 1, dh, dc, contributions

        start = (trace.steps - 1, final + zeros, zeros, tf.zeros([n_rows, width]))
        contributions = tf.while_loop(lambda t, *_: t >= 0, body, start, maximum_iterations=width)[3]
        if self.categorical:  # [k·B, width] → [B, width, k]
            return tf.transpose(tf.reshape(contributions, [self.classes, batch, width]), [1, 2, 0])
        return contributions

    def _run(self, ids: tf.Tensor, keep_trace: bool = False):
        """The loop: sum of valid outputs ``[D, B, u]``, final outputs ``[D, B, u]``, tokens per row ``[B]``, and
        with ``keep_trace`` what `_backward` needs of every step (`_Trace`)."""
        batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
        present = ids != 0
        counts = tf.reduce_sum(tf.cast(present, tf.int32), axis=1)
        # One past the last token: the backward direction starts there (equal to counts on right-padded rows).
        ends = tf.reduce_max(tf.where(present, tf.range(1, width + 1)[None, :], 0), axis=1)
        steps = tf.reduce_max(ends)
        zeros = tf.zeros([self.directions, batch, self.units])

        def body(t, h, c, pooled, *arrays):
            positions = tf.stack([tf.fill([batch], t), tf.maximum(ends - 1 - t, 0)][: self.directions])  # [D, B]
            step_ids = tf.transpose(tf.gather(ids, tf.transpose(positions), batch_dims=1))  # [D, B]
            valid = (step_ids != 0) & (t < ends)[None, :]
            z = tf.gather(self.gate_tables, step_ids, batch_dims=1) + tf.matmul(h, self.recurrent_kernels)  # [D, B, 4u]
            i, f, g, o = tf.split(z, 4, axis=-1)
            new_c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            new_h = tf.sigmoid(o) * tf.tanh(new_c)
            keep = valid[..., None]
            if arrays:
                arrays = tuple(array.write(t, value) for array, value in zip(arrays, (z, c, positions, valid), strict=True))
            return (t + 1, tf.where(keep, new_h, h), tf.where(keep, new_c, c), pooled + tf.where(keep, new_h, 0.0), *arrays)

        arrays = ()
        if keep_trace:
            arrays = tuple(
                tf.TensorArray(dtype, size=width, clear_after_read=False) for dtype in (tf.float32, tf.float32, tf.int32, tf.bool)
            )
        # maximum_iterations: a bound the compiler can size the trace by
        _, h, _, pooled, *arrays = tf.while_loop(
            lambda t, *_: t < steps, body, (tf.constant(0), zeros, zeros, zeros, *arrays), maximum_iterations=width
        )
        return pooled, h, counts, (_Trace(*arrays, steps) if keep_trace else None)

    def serve(self, token_ids: tf.Tensor):
        """`probability` (or `probabilities`: softmax and logits) with the inputs padded to the bounded set of
        shapes `compiled` is called with."""
        return self._padded(token_ids, self.compiled, self.plain)

    def serve_explanation(self, token_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`explanation` likewise: probabilities and logits ``[batch]``, contributions ``[batch, width]`` of the ids as given
        (``[batch, k]`` and ``[batch, width, k]`` with k logits)."""
        probability, logit, contributions = self._padded(token_ids, self.compiled_explanation, self.plain_explanation)
        return probability, logit, contributions[:, : tf.shape(token_ids)[1]]

    def _padded(self, token_ids: tf.Tensor, compiled, plain):
        """``compiled`` on ids padded to ``max_length`` and the next batch bucket (``plain`` on wider ids), unpadded.

        Ids outside the vocabulary are refused here: inside XLA a gather clamps them and would score garbage.
        """
        tf.debugging.assert_non_negative(token_ids, message="token ids must be in [0, vocabulary size)")
        tf.debugging.assert_less(token_ids, int(self.gate_tables.shape[1]), message="token ids must be in [0, vocabulary size)")
        batch, width = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        outputs = tf.cond(
            width <= self.max_length,
            lambda: self._serve_compiled(tf.pad(token_ids, [[0, 0], [0, self.max_length - width]]), compiled),
            lambda: plain(token_ids),
        )
        return tf.nest.map_structure(lambda output: output[:batch], outputs)

    def _serve_compiled(self, ids: tf.Tensor, compiled):
        """Rows padded to the next bucket; a batch larger than the largest bucket runs as chunks of it."""
        batch = tf.shape(ids)[0]
        buckets = tf.constant(self.batch_buckets, tf.int32)
        largest = self.batch_buckets[-1]
        bucket = buckets[tf.minimum(tf.searchsorted(buckets, batch[None])[0], len(self.batch_buckets) - 1)]

        def one_call():
            return compiled(tf.pad(ids, [[0, bucket - batch], [0, 0]]))

        def chunks():
            n_chunks = (batch + largest - 1) // largest
            padded = tf.pad(ids, [[0, n_chunks * largest - batch], [0, 0]])
            chunked = tf.reshape(padded, [n_chunks, largest, self.max_length])
            specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), compiled.get_concrete_function().structured_outputs)
            out = tf.map_fn(compiled, chunked, fn_output_signature=specs)
            return tf.nest.map_structure(lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0)), out)

        return tf.cond(batch <= largest, one_call, chunks)
