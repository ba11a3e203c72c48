"""The workers' persistent XLA compile cache: reused where a program is the same, never where it is not."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ROOT
from service.worker import compile_cache
from tests.helpers import child_env

# What a worker does at start, up to serving: cache, TensorFlow, load, warm-up; then scores fixed sequences. One
# process loads the versions given one after the other, as a worker of several versions does.
WARM_AND_SCORE = """
import json, sys
from pathlib import Path
from service.worker import compile_cache
folder = compile_cache.configure(sys.argv[1])
from service.worker.model import SentimentModel, configure_devices
from service.model_store import resolve
device = configure_devices(1)
for version in sys.argv[3:]:
    before = compile_cache.entries(folder)
    model = SentimentModel(resolve(Path(sys.argv[2]), int(version)), device)
    model.warm_up(16)
    scores = model.predict([[5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [20, 21]]).tolist()
    print(json.dumps({"folder": str(folder), "compiled": compile_cache.entries(folder) - before, "scores": scores}))
"""


def warm_and_score(cache_root: Path | str, model_dir: Path, *versions: int) -> list[dict]:
    """What one new process that loads ``versions`` in turn compiled for each, and its scores."""
    env = child_env(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-c", WARM_AND_SCORE, str(cache_root), str(model_dir), *map(str, versions)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.strip().splitlines()[-len(versions) :]]


# --- the folder and the flag -------------------------------------------------------------------


def test_each_tensorflow_build_has_a_folder_of_its_own(tmp_path, monkeypatch):
    build = compile_cache.tensorflow_build()
    assert build.startswith("tf-") and build == compile_cache.tensorflow_build()  # stable for one installation
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    folder = compile_cache.configure(str(tmp_path))
    assert folder == tmp_path / build and folder.is_dir()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_persistent_cache_directory={folder}"

    monkeypatch.setattr(compile_cache, "tensorflow_build", lambda: "tf-9.9.9-0123456789ab")  # another build
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=false")
    other = compile_cache.configure(str(tmp_path))
    assert other == tmp_path / "tf-9.9.9-0123456789ab" != folder
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_enable_lazy_compilation=false --tf_xla_persistent_cache_directory={other}"


def test_an_operators_own_cache_flag_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={tmp_path / 'mine'}")
    assert compile_cache.configure(str(tmp_path / "ours")) == tmp_path / "mine"
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_persistent_cache_directory={tmp_path / 'mine'}"


def test_no_cache_when_off_or_not_writable(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    assert compile_cache.configure("") is None and "TF_XLA_FLAGS" not in os.environ
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert compile_cache.configure(str(blocked)) is None
    assert "TF_XLA_FLAGS" not in os.environ and "not writable" in caplog.text
    assert compile_cache.entries(None) == 0 and compile_cache.entries(tmp_path / "missing") == 0


# --- real workers' programs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_of_three(tiny_two_versions, tmp_path_factory) -> Path:
    """``sentiment/1`` (the tiny model), ``/2`` (its network with the output layer negated: the same graph, other
    weights) and ``/3`` (a network of another size: another graph)."""
    import keras

    from service.model_store import resolve
    from training.export import export
    from training.model import Architecture, build_model

    store = tmp_path_factory.mktemp("cache-store") / "sentiment"
    shutil.copytree(tiny_two_versions / "sentiment", store)
    base = resolve(store, 1)
    architecture = {**base.metadata["architecture"], "lstm_units": base.metadata["architecture"]["lstm_units"] + 4}
    keras.utils.set_random_seed(3)
    export(
        build_model(Architecture(**architecture)),
        base.load_tokenizer(),
        store / "3",
        {**base.metadata, "version": 3, "architecture": architecture},
    )
    return store


@pytest.mark.slow
def test_programs_are_shared_by_the_same_graph_only_and_never_stale(store_of_three, tmp_path):
    cache = tmp_path / "cache"
    [first] = warm_and_score(cache, store_of_three, 1)
    assert first["compiled"] > 0 and Path(first["folder"]).parent == cache

    # Another process: the same graph with other weights, exported apart, has programs of its own (an export's
    # functions have names of their own, part of the key); so has another graph. Each scores as without any cache.
    same_graph, other_graph = warm_and_score(cache, store_of_three, 2, 3)
    assert same_graph["compiled"] > 0 and other_graph["compiled"] > 0
    uncached = warm_and_score("", store_of_three, 2, 3)
    assert [u["folder"] for u in uncached] == ["None", "None"] and [u["compiled"] for u in uncached] == [0, 0]
    assert same_graph["scores"] == pytest.approx(uncached[0]["scores"], abs=1e-6)
    assert other_graph["scores"] == pytest.approx(uncached[1]["scores"], abs=1e-6)
    assert same_graph["scores"] != pytest.approx(first["scores"], abs=1e-3)

    # A restart of any of them compiles nothing.
    assert [run["compiled"] for run in warm_and_score(cache, store_of_three, 1, 3)] == [0, 0]
