"""The long-text policy of `service.tokenizer` in TensorFlow ragged ops, for the ``predict_text`` signature.

Each function is the batch form of its Python twin in `service.tokenizer`
(`Tokenizer.encode`'s cut, `split_windows`, `combine`); a test proves the
signature and the service's Python path agree on every kind of text.
"""

from __future__ import annotations

import tensorflow as tf


def cut_middle(ids: tf.RaggedTensor, n_tokens: tf.Tensor, limit: int, head: int) -> tf.RaggedTensor:
    """Rows longer than ``limit`` keep their first ``head`` ids and their last ``limit - head``."""
    kept = tf.minimum(n_tokens, limit)
    positions = tf.ragged.range(kept)
    rows = positions.value_rowids()
    skip = tf.gather(tf.maximum(n_tokens - limit, 0), rows)
    source = tf.where(positions.flat_values < head, positions.flat_values, positions.flat_values + skip)
    flat = tf.gather(ids.flat_values, tf.gather(tf.cast(ids.row_starts(), tf.int32), rows) + source)
    return tf.RaggedTensor.from_row_lengths(flat, tf.cast(kept, tf.int64))


def split_windows(ids: tf.RaggedTensor, window: int) -> tuple[tf.RaggedTensor, tf.Tensor, tf.Tensor]:
    """`service.tokenizer.split_windows` on every row: the windows ``[windows, (ids)]`` in row order, the row each
    belongs to, and how many each row has."""
    n = tf.cast(ids.row_lengths(), tf.int32)
    count = tf.maximum((n + window - 1) // window, 1)
    owner = tf.repeat(tf.range(tf.shape(n)[0]), count)
    index = tf.ragged.range(count).flat_values
    size, longer = tf.gather(n // count, owner), tf.gather(n % count, owner)
    start = index * size + tf.minimum(index, longer)
    length = size + tf.cast(index < longer, tf.int32)
    positions = tf.ragged.range(start, start + length)
    row_starts = tf.gather(tf.cast(ids.row_starts(), tf.int32), tf.gather(owner, positions.value_rowids()))
    flat = tf.gather(ids.flat_values, row_starts + positions.flat_values)
    return tf.RaggedTensor.from_row_lengths(flat, tf.cast(length, tf.int64)), owner, count


def combine_windows(p: tf.Tensor, owner: tf.Tensor, count: tf.Tensor, lengths: tf.Tensor, aggregate: str) -> tf.Tensor:
    """`service.tokenizer.combine` for every row: its windows' probabilities ``p`` → its own (one window: its score as is)."""
    rows = tf.shape(count)[0]
    if aggregate == "length_weighted":
        combined = tf.math.unsorted_segment_sum(p * lengths, owner, rows) / tf.math.unsorted_segment_sum(lengths, owner, rows)
    elif aggregate == "mean_logit":
        clipped = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
        combined = tf.sigmoid(tf.math.unsorted_segment_mean(tf.math.log(clipped / (1 - clipped)), owner, rows))
    else:
        combined = tf.math.unsorted_segment_mean(p, owner, rows)
    first = tf.gather(p, tf.cumsum(count, exclusive=True))
    return tf.where(count == 1, first, combined)


def combine_window_logits(probabilities: tf.Tensor, logits: tf.Tensor, owner: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """k labels: each row's softmax of the mean of its windows' logits ``[rows, k]`` (one window: its probabilities as is)."""
    rows = tf.shape(count)[0]
    combined = tf.nn.softmax(tf.math.unsorted_segment_mean(logits, owner, rows))
    first = tf.gather(probabilities, tf.cumsum(count, exclusive=True))
    return tf.where((count == 1)[:, None], first, combined)
