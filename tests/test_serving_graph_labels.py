"""The fused serving graph with k logits: it computes the Keras network and each class's gradient × input;
with one logit it is the graph the committed versions were exported with, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from service.model_store import resolve
from tests.conftest import COMMITTED_MODEL_DIR

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SPEC = [tf.TensorSpec([None, None], tf.int32)]


def random_ids(rng, vocab: int, batch: int, width: int) -> np.ndarray:
    ids = np.zeros((batch, width), np.int32)
    for row, length in enumerate(rng.integers(1, width + 1, size=batch)):
        ids[row, :length] = rng.integers(1, vocab, size=length)
    return ids


def keras_gradient_x_input(model, ids: list[int], k: int) -> np.ndarray:
    embedding = model.get_layer("embedding")
    after = model.layers[model.layers.index(embedding) + 1 : model.layers.index(model.get_layer("logits")) + 1]
    vectors = embedding(tf.constant([ids]))
    with tf.GradientTape() as tape:
        tape.watch(vectors)
        h = vectors
        for layer in after:
            h = layer(h, training=False)
        logit = h[:, k]
    return tf.reduce_sum(tape.gradient(logit, vectors) * vectors, axis=-1).numpy()[0]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_every_member_of_the_family_with_k_labels(bidirectional, pooling):
    from training.model import Architecture, build_model
    from training.serving_graph import FusedLSTM

    keras.utils.set_random_seed(5)
    k = 4
    model = build_model(Architecture(vocab_size=60, embedding_dim=8, lstm_units=5, bidirectional=bidirectional, pooling=pooling, classes=k))
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(0, 0.7, w.shape).astype("float32") for w in model.get_weights()])
    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    fused = FusedLSTM(model, max_length=12, batch_buckets=(4, 8))
    assert fused.categorical and fused.classes == k
    serve = tf.function(fused.serve, input_signature=SPEC)
    explain = tf.function(fused.serve_explanation, input_signature=SPEC)
    for width, batch in ((12, 3), (12, 8), (12, 11), (20, 5)):
        ids = random_ids(rng, 60, batch, width)
        probabilities, logits = serve(tf.constant(ids))
        np.testing.assert_allclose(probabilities.numpy(), model(ids, training=False).numpy(), atol=1e-5)
        np.testing.assert_allclose(logits.numpy(), logits_model(ids, training=False).numpy(), atol=1e-5)
        explained_p, explained_logits, contributions = explain(tf.constant(ids))
        np.testing.assert_allclose(explained_p.numpy(), probabilities.numpy(), atol=1e-6)
        np.testing.assert_allclose(explained_logits.numpy(), logits.numpy(), atol=1e-5)
        assert contributions.shape == (batch, width, k)
        for row in range(batch):
            length = int((ids[row] != 0).sum())
            for c in range(k):
                expected = keras_gradient_x_input(model, ids[row, :length].tolist(), c)
                np.testing.assert_allclose(contributions.numpy()[row, :length, c], expected, atol=1e-4, err_msg=f"row {row} class {c}")
            assert np.all(contributions.numpy()[row, length:] == 0)


def test_a_logits_layer_without_its_softmax_is_refused():
    from training.serving_graph import FusedLSTM, UnsupportedModel

    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(20, 4, mask_zero=True, name="embedding")(ids)
    x = keras.layers.LSTM(3, name="lstm")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(x)
    model = keras.Model(ids, keras.layers.Dense(3, name="logits")(x))
    with pytest.raises(UnsupportedModel, match="softmax"):
        FusedLSTM(model, max_length=8)


@pytest.mark.slow
def test_one_logit_graph_is_the_committed_one_bit_for_bit():
    """The committed version's weights through today's graph code: the same numbers as its stored graph, exactly."""
    from training.reexport import restore_keras_model
    from training.serving_graph import FusedLSTM

    version = resolve(COMMITTED_MODEL_DIR)
    fused = FusedLSTM(restore_keras_model(version), version.metadata["serving"]["max_length"], version.metadata["serving"]["batch_buckets"])
    assert not fused.categorical and fused.classes == 1
    loaded = tf.saved_model.load(str(version.path))
    serve, explain = tf.function(fused.serve, input_signature=SPEC), tf.function(fused.serve_explanation, input_signature=SPEC)
    rng = np.random.default_rng(6)
    for batch, width in ((5, 30), (33, 120), (3, 400)):
        ids = tf.constant(random_ids(rng, version.metadata["vocab_size"], batch, width))
        np.testing.assert_array_equal(serve(ids).numpy(), loaded.signatures["serving_default"](token_ids=ids)["probability"].numpy())
        stored = loaded.signatures["explain"](token_ids=ids)
        for ours, name in zip(explain(ids), ("probability", "logit", "contributions"), strict=True):
            np.testing.assert_array_equal(ours.numpy(), stored[name].numpy(), err_msg=name)
