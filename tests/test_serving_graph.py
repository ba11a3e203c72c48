"""The fused serving graph computes the Keras network, compiles only at warm-up, and the GPU signature is cuDNN's."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from service.config import ROOT
from service.model_store import ModelVersion, resolve
from service.tokenizer import LongTextPolicy
from tests.conftest import COMMITTED_MODEL_DIR

pytestmark = pytest.mark.slow  # Exports, compiles and compares whole models: minutes of CPU.

tf = pytest.importorskip("tensorflow")

NO_GPU = not tf.config.list_physical_devices("GPU")


@pytest.fixture(scope="module")
def committed() -> ModelVersion:
    version = resolve(COMMITTED_MODEL_DIR)
    assert "serving" in version.metadata, "the newest committed version should carry the fused serving graph"
    return version


@pytest.fixture(scope="module")
def tiny(tiny_model_store) -> ModelVersion:
    return resolve(tiny_model_store / "sentiment", 1)


def keras_scorer(version: ModelVersion):
    """The exported weights in Keras' own graph (no cuDNN, whatever the machine): the reference."""
    return _keras_scorer(version.path)


def signature(version: ModelVersion, name: str = "serving_default"):
    return _signature(version.path, name)


# Loaded once per test session: each load of a SavedModel compiles its XLA programs afresh.
@functools.cache
def _keras_scorer(path):
    from training.export import keras_cudnn
    from training.reexport import restore_keras_model

    model = restore_keras_model(resolve(path.parent, int(path.name)))
    with keras_cudnn(False):
        score = tf.function(lambda ids: model(ids, training=False)[:, 0], input_signature=[tf.TensorSpec([None, None], tf.int32)])
        score.get_concrete_function()
    return lambda ids: score(tf.constant(ids)).numpy()


@functools.cache
def _signature(path, name: str):
    serve = tf.saved_model.load(str(path)).signatures[name]
    return lambda ids: serve(token_ids=tf.constant(ids))["probability"].numpy()


def pad(sequences: list[list[int]], width: int | None = None) -> np.ndarray:
    out = np.zeros((len(sequences), width or max(len(s) for s in sequences)), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


def texts_of_every_length(version: ModelVersion, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` texts of vocabulary words (some out of it), 1 to ~1.5 × max_length words, as the tokenizer encodes them
    head + tail: whole sequences up to ``max_length`` (the graph's compiled width), what these tests feed it."""
    tokenizer = version.load_tokenizer(LongTextPolicy("head_tail", version.load_tokenizer().max_length))
    rng = np.random.default_rng(seed)
    words = [*tokenizer.vocabulary[2:], "zzqx", "wxyv"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, tokenizer.max_length * 3 // 2))) for _ in range(n)]
    return [e.ids for e in tokenizer.encode_batch(texts)]


def mixed_batches(sequences: list[list[int]], seed: int, largest: int = 140) -> list[list[int]]:
    """Index batches of random sizes (1 to ``largest``: every bucket, and past the largest), in random order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sequences)).tolist()
    batches = []
    while order:
        size = int(rng.choice([1, 2, 3, 5, 7, 13, 24, 33, 50, 64, 97, 128, 129, largest]))
        batches.append(order[:size])
        order = order[size:]
    return batches


@pytest.mark.parametrize("which", ["committed", "tiny"])
def test_fast_graph_equals_keras_on_1000_texts_in_mixed_batches(which, request):
    version = request.getfixturevalue(which)
    fast, reference = signature(version), keras_scorer(version)
    sequences = texts_of_every_length(version, 1100)
    assert len(sequences) >= 1000 and {len(s) for s in sequences} >= {1, version.load_tokenizer().max_length}
    worst = 0.0
    for batch in mixed_batches(sequences, seed=1):
        ids = pad([sequences[i] for i in batch])
        worst = max(worst, float(np.abs(fast(ids) - reference(ids)).max()))
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("which", ["committed", "tiny"])
def test_every_length_from_one_to_beyond_the_fixed_width(which, request):
    """Widths past ``max_length`` (only raw-id callers send them) take the loop without XLA; same scores."""
    version = request.getfixturevalue(which)
    max_length = version.load_tokenizer().max_length
    fast, reference = signature(version), keras_scorer(version)
    rng = np.random.default_rng(2)
    lengths = list(range(1, max_length + 60))
    sequences = [rng.integers(1, version.metadata["vocab_size"], size=n).tolist() for n in lengths]
    for start in range(0, len(sequences), 37):  # each batch a run of neighbouring lengths, shuffled
        chunk = [sequences[i] for i in rng.permutation(range(start, min(start + 37, len(sequences))))]
        ids = pad(chunk)
        np.testing.assert_allclose(fast(ids), reference(ids), atol=1e-5, err_msg=f"lengths {start + 1}..{start + len(chunk)}")


def test_a_score_does_not_depend_on_its_batch_mates(committed):
    fast = signature(committed)
    rng = np.random.default_rng(3)
    sequences = texts_of_every_length(committed, 300, seed=3)
    alone = np.array([fast(pad([s]))[0] for s in sequences[:20]])
    for size in (2, 7, 13, 50, 128, 129, 200):
        mates = [sequences[i] for i in rng.choice(range(20, len(sequences)), size=size - 1, replace=False)]
        for width in (None, 430):  # padded to the batch's longest, or wider than the compiled width
            for probe in range(0, 20, 7):
                batch = mates[:]
                position = int(rng.integers(0, size))
                batch.insert(position, sequences[probe])
                scores = fast(pad(batch, width))
                assert abs(scores[position] - alone[probe]) <= 1e-6, (size, width, probe)


def test_ids_outside_the_vocabulary_are_refused_not_clamped(committed):
    serve = tf.saved_model.load(str(committed.path)).signatures["serving_default"]
    for bad in (committed.metadata["vocab_size"], -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary size"):
            serve(token_ids=tf.constant([[5, 6, 7], [8, bad, 0]], tf.int32))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_every_member_of_the_model_family(bidirectional, pooling):
    """Built from a fresh Keras model of each shape, including ids 0 inside a row (Keras masks those steps too)."""
    import keras

    from training.model import Architecture, build_model
    from training.serving_graph import FusedLSTM

    keras.utils.set_random_seed(4)
    model = build_model(Architecture(vocab_size=60, embedding_dim=8, lstm_units=5, bidirectional=bidirectional, pooling=pooling))
    rng = np.random.default_rng(4)
    model.set_weights([rng.normal(0, 0.7, w.shape).astype("float32") for w in model.get_weights()])
    fused = FusedLSTM(model, max_length=12, batch_buckets=(4, 8))
    serve = tf.function(fused.serve, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    for width, batch in ((12, 3), (12, 8), (12, 11), (20, 5)):
        lengths = rng.integers(1, width + 1, size=batch)
        ids = pad([rng.integers(1, 60, size=n).tolist() for n in lengths], width)
        if lengths[0] > 2:  # holes before the row's last token (the first kept, so that the row is not all padding)
            ids[0, 1 : lengths[0] - 1] *= rng.random(lengths[0] - 2) < 0.6
        expected = model(ids, training=False).numpy()[:, 0]
        np.testing.assert_allclose(serve(tf.constant(ids)).numpy(), expected, atol=1e-5, err_msg=f"width {width}, batch {batch}")


def graph_ops(function) -> set[str]:
    graph = function.graph.as_graph_def()
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_serving_gpu_holds_cudnn_and_serving_default_does_not(committed):
    loaded = tf.saved_model.load(str(committed.path))
    assert set(loaded.signatures) == {"serving_default", "serving_gpu", "predict_text", "explain"}
    assert "CudnnRNNV3" in graph_ops(loaded.signatures["serving_gpu"])
    for name in ("serving_default", "predict_text"):
        assert "CudnnRNNV3" not in graph_ops(loaded.signatures[name]), name
    compiled = [f for f in loaded.signatures["serving_default"].graph.as_graph_def().library.function if f.attr["_XlaMustCompile"].b]
    assert compiled, "serving_default should call a function XLA must compile"
    assert committed.metadata["serving"]["signatures"] == {"cpu": "serving_default", "gpu": "serving_gpu"}


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_without_a_gpu_the_artifact_loads_and_only_serving_gpu_refuses(committed):
    loaded = tf.saved_model.load(str(committed.path))
    ids = tf.constant([[5, 6, 7], [8, 0, 0]], tf.int32)
    assert loaded.signatures["serving_default"](token_ids=ids)["probability"].shape == (2,)
    assert loaded.signatures["predict_text"](texts=tf.constant(["a fine film"]))["probability"].shape == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="CudnnRNNV3"):
        loaded.signatures["serving_gpu"](token_ids=ids)


@pytest.mark.skipif(NO_GPU, reason="needs a GPU: serving_gpu runs Keras' cuDNN LSTM (CudnnRNNV3), which has no CPU kernel")
def test_serving_gpu_agrees_with_the_fast_graph_on_a_gpu(committed):
    tf.config.experimental.enable_tensor_float_32_execution(False)  # TF32 would round cuDNN's matrix products to 10 bits
    gpu, cpu = signature(committed, "serving_gpu"), signature(committed)
    sequences = texts_of_every_length(committed, 1000, seed=5)
    for batch in mixed_batches(sequences, seed=5, largest=128):
        ids = pad([sequences[i] for i in batch])
        np.testing.assert_allclose(gpu(ids), cpu(ids), atol=1e-5)


def test_sentiment_model_picks_the_signature_for_its_device(committed):
    from service.worker.model import SentimentModel

    on_cpu = SentimentModel(committed, "CPU")
    assert on_cpu.signature == "serving_default" and on_cpu.batch_buckets == committed.metadata["serving"]["batch_buckets"]
    on_gpu = SentimentModel(committed, "/physical_device:GPU:0")
    assert on_gpu.signature == "serving_gpu" and on_gpu.batch_buckets == []


def test_the_version_it_was_exported_from_is_still_served_with_the_same_scores(committed):
    """A version without the ``serving`` entry (v2) has ``serving_default`` alone: served on any device, as before."""
    from service.worker.model import SentimentModel

    source = committed.metadata.get("exported_from", {}).get("version")
    if source is None or not (COMMITTED_MODEL_DIR / str(source)).is_dir():
        pytest.skip("the newest committed version was trained, not exported again from an older one")
    older = resolve(COMMITTED_MODEL_DIR, source)
    assert "serving" not in older.metadata
    legacy = SentimentModel(older, "/physical_device:GPU:0")
    assert legacy.signature == "serving_default" and legacy.batch_buckets == []
    legacy.warm_up(128)
    sequences = texts_of_every_length(older, 60, seed=6)
    np.testing.assert_allclose(legacy.predict(sequences), SentimentModel(committed, "CPU").predict(sequences), atol=1e-5)


def test_warm_up_covers_every_bucket_a_batch_size_can_meet(committed):
    from service.worker.model import SentimentModel

    model = SentimentModel(committed, "CPU")
    buckets = model.batch_buckets
    assert model.warm_up_batch_sizes() == buckets
    assert model.warm_up_batch_sizes(buckets[-1]) == buckets
    assert model.warm_up_batch_sizes(10) == [b for b in buckets if b < 10] + [min(b for b in buckets if b >= 10)]
    assert model.warm_up_batch_sizes(1) == [1]
    assert model.warm_up_batch_sizes(500) == [*buckets, buckets[-1] + 1]  # past the largest bucket: chunks of it
    assert [model.padded_batch_size(n) for n in (1, 3, buckets[-1], buckets[-1] + 1)] == [1, 4, buckets[-1], 2 * buckets[-1]]


NO_COMPILE_AFTER_WARM_UP = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np

    from service.worker.model import SentimentModel, configure_devices
    from service.model_store import resolve

    dump, store, max_batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

    def modules():
        return {p.name.split(".")[0] for p in dump.glob("module_*")}

    model = SentimentModel(resolve(store), configure_devices(1))
    width = model.version.metadata["serving"]["max_length"]
    loaded = modules()
    model.warm_up(max_batch)
    warm = modules()
    rng = np.random.default_rng(0)
    def texts(batch, longest):
        lengths = [longest] + rng.integers(1, longest + 1, size=batch - 1).tolist()
        return [rng.integers(1, model.vocab_size, size=n).tolist() for n in rng.permutation(lengths)]
    for batch in range(1, max_batch + 1):
        model.predict(texts(batch, int(rng.integers(1, width + 1))))
    for longest in range(1, width + 1):
        model.predict(texts(1 + longest % 9 if longest % 5 else int(rng.integers(1, max_batch + 1)), longest))
    for longest in (width + 1, width + 50):
        model.predict(texts(3, longest))
    after = modules()
    model._loaded.fused.compiled(np.full((5, width), 2, np.int32))  # a shape no bucket has: the signal must see it
    control = modules()
    print(json.dumps({"warm_up": len(warm - loaded), "after_warm_up": sorted(after - warm), "control": len(control - after)}))
    """
)


def test_no_compile_after_warm_up(committed, tmp_path):
    """XLA's dump folder gets a module per compilation: none may appear after the warm-up, whatever the batch or width."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_XLA_FLAGS", "XLA_FLAGS")}  # no persistent cache hiding compiles
    env.update({"XLA_FLAGS": f"--xla_dump_to={tmp_path}", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)})
    max_batch = 128
    result = subprocess.run(
        [sys.executable, "-c", NO_COMPILE_AFTER_WARM_UP, str(tmp_path), str(COMMITTED_MODEL_DIR), str(max_batch)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["warm_up"] >= len(committed.metadata["serving"]["batch_buckets"]), counts
    assert counts["after_warm_up"] == [], counts
    assert counts["control"] >= 1, counts
