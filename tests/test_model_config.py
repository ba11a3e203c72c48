"""The model config file (`service.model_config`) and the routing it drives (`service.routing`), without a server."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import BadRequest, NotFound
from service.model_config import ConfigError, ConfigWatcher, describe, load_config, parse_config
from service.model_store import ModelVersion
from service.routing import ModelRouter, share_of


@pytest.fixture
def store(tmp_path) -> Path:
    """A model store of complete-looking versions (no weights needed: the config only checks they exist)."""
    for name, versions in (("sentiment", (1, 2, 3)), ("tweets", (1,))):
        for version in versions:
            folder = tmp_path / "store" / name / str(version)
            folder.mkdir(parents=True)
            (folder / "saved_model.pb").write_bytes(b"")
            (folder / "metadata.json").write_text("{}")
    return tmp_path / "store"


CONFIG = """
models:
  sentiment:
    versions: [2, 3]
    labels: {stable: 3, canary: 2}
    default: stable
    canary: {label: canary, percent: 10}
    shadow: {label: canary, percent: 50}
  tweets:
    latest: 1
"""


def test_a_config_reads_as_written(store):
    config = parse_config(CONFIG, store, "sentiment")
    sentiment, tweets = config.models["sentiment"], config.models["tweets"]
    assert sentiment.versions == (2, 3) and sentiment.labels == {"stable": 3, "canary": 2} and sentiment.default == 3
    assert sentiment.canary == (2, 0.10) and sentiment.shadow == (2, 0.50)
    assert tweets.versions == (1,) and tweets.default == 1 and tweets.canary is None
    assert config.default_model == "sentiment" and config.versions() == [("sentiment", 2), ("sentiment", 3), ("tweets", 1)]
    assert parse_config("models: {sentiment: {latest: 2}}", store, "other").models["sentiment"].versions == (2, 3)
    assert "canary v2 10%" in describe(config)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("models: [", "not valid YAML"),
        ("{}", "models"),
        ("models: {}", "models"),
        ("models: {sentiment: {}}", "exactly one of `versions: [...]` or `latest: N`"),
        ("models: {sentiment: {versions: [3], latest: 1}}", "exactly one of"),
        ("models: {sentiment: {versions: [7]}}", "models.sentiment.versions: 7 not in the model store"),
        ("models: {nope: {latest: 1}}", "models.nope: no complete version"),
        ("models: {sentiment: {versions: [3], labels: {stable: 2}}}", "models.sentiment.labels.stable: version 2 is not served"),
        ("models: {sentiment: {versions: [3], labels: {Stable: 3}}}", "a label is a lower-case letter"),
        ("models: {sentiment: {versions: [3], default: canary}}", "models.sentiment.default: no label 'canary'"),
        ("models: {sentiment: {versions: [3], canary: {label: x, percent: 5}}}", "models.sentiment.canary.label: no label 'x'"),
        ("models: {sentiment: {versions: [3], labels: {c: 3}, canary: {label: c, percent: 120}}}", "less than or equal to 100"),
        ("models: {sentiment: {versions: [3], extra: 1}}", "Extra inputs are not permitted"),
        ("models: {'../sentiment': {latest: 1}}", "a model name is 1-64 letters"),
    ],
)
def test_a_wrong_config_says_what_is_wrong(store, text, problem):
    with pytest.raises(ConfigError) as refused:
        parse_config(text, store, "sentiment")
    assert problem in str(refused.value)


# --- the watcher ---------------------------------------------------------------------------------


def test_a_change_is_in_force_at_the_next_look_and_a_bad_one_never(store, tmp_path, caplog):
    path = tmp_path / "models.yaml"
    path.write_text("models: {sentiment: {versions: [3]}}")
    settings = Settings(model_store=store, model_config_file=str(path))
    seen = []
    watcher = ConfigWatcher(settings, load_config(settings), seen.append)
    assert watcher.check() is False  # nothing changed

    path.write_text("models: {sentiment: {versions: [2, 3], labels: {canary: 2}, canary: {label: canary, percent: 20}}}")
    assert watcher.check() is True and seen[-1].models["sentiment"].canary == (2, 0.2)

    good = watcher.current
    with caplog.at_level(logging.ERROR):
        path.write_text("models: {sentiment: {versions: [9]}}")
        assert watcher.check() is False
    assert watcher.current is good and len(seen) == 1  # the last good config stays in force
    assert "refused" in caplog.text and "9 not in the model store" in caplog.text

    shutil.copytree(store / "sentiment" / "3", store / "sentiment" / "4")  # `latest` follows the store
    path.write_text("models: {sentiment: {latest: 1}}")
    assert watcher.check() is True and seen[-1].models["sentiment"].versions == (4,)
    shutil.copytree(store / "sentiment" / "4", store / "sentiment" / "5")
    assert watcher.check() is True and seen[-1].models["sentiment"].versions == (5,)


def test_without_a_file_the_settings_say_what_is_served(store):
    config = load_config(Settings(model_store=store, model_name="sentiment"))
    assert config.versions() == [("sentiment", 3)] and config.default_model == "sentiment"
    assert load_config(Settings(model_store=store, model_name="sentiment", model_version=2)).versions() == [("sentiment", 2)]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Settings(model_store=store, model_config_file=os.devnull + "/missing.yaml"))


# --- routing -----------------------------------------------------------------------------------


class FakeScorer:
    def __init__(self, version: ModelVersion, alive: bool = True):
        self.model = version
        self.alive = alive

    def workers_alive(self) -> bool:
        return self.alive


@pytest.fixture
def router(store):
    config = parse_config(CONFIG, store, "sentiment")
    return ModelRouter(Settings(model_store=store), config, FakeScorer, lambda name, version: 1)


def test_default_traffic_is_split_by_the_canary_share_and_mirrored_by_the_shadows(router):
    routes = [router.route(request_id=f"req-{i}") for i in range(10_000)]
    kinds = Counter(r.kind for r in routes)
    assert kinds["canary"] / len(routes) == pytest.approx(0.10, abs=0.01)
    assert all(r.scorer.model.version == (2 if r.kind == "canary" else 3) for r in routes)
    shadowed = [r for r in routes if r.shadow is not None]
    assert all(r.kind == "default" and r.shadow.model.version == 2 for r in shadowed)  # never mirrored to itself
    assert len(shadowed) / kinds["default"] == pytest.approx(0.50, abs=0.02)
    again = router.route(request_id="req-7")
    assert (again.kind, again.shadow is None) == (routes[7].kind, routes[7].shadow is None)  # stable per request id
    assert share_of("a", "canary") != share_of("a", "shadow")


def test_naming_a_version_or_a_label_is_never_split(router):
    for _ in range(200):
        assert router.route(version=2, request_id=os.urandom(8).hex()).scorer.model.version == 2
        named = router.route(label="stable", request_id=os.urandom(8).hex())
        assert (named.kind, named.scorer.model.version, named.shadow) == ("named", 3, None)
    assert router.route("tweets").scorer.model.name == "tweets"


def test_a_canary_without_a_live_worker_takes_nothing(router):
    router._scorers[("sentiment", 2)].alive = False
    assert {router.route(request_id=f"r{i}").kind for i in range(500)} == {"default"}


def test_unknown_models_versions_and_labels_are_404(router):
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        router.route("nope")
    with pytest.raises(NotFound, match=r"no version 1 served .* in the model store, but not served"):
        router.route(version=1)
    with pytest.raises(NotFound, match="no label 'gold'"):
        router.route(label="gold")
    with pytest.raises(BadRequest, match="not both"):
        router.route(version=3, label="stable")


def test_states_of_every_version(router, store):
    live = {("sentiment", 3): 1, ("sentiment", 1): 1}  # v1 is no longer configured but still has a worker
    router._live_workers = lambda name, version: live.get((name, version), 0)
    assert router.states("sentiment") == [
        {"version": 1, "state": "UNLOADING", "labels": []},
        {"version": 2, "state": "LOADING", "labels": ["canary"]},
        {"version": 3, "state": "AVAILABLE", "labels": ["stable"]},
    ]


def test_a_new_config_swaps_the_scorers_and_keeps_the_ones_still_served(router, store):
    kept = router.scorer("sentiment", 3)
    router.apply(parse_config("models: {sentiment: {versions: [1, 3]}}", store, "sentiment"))
    assert router.scorer("sentiment", 3) is kept and router.scorer("sentiment", 1).model.version == 1
    with pytest.raises(NotFound):
        router.scorer("sentiment", 2)
    with pytest.raises(NotFound):
        router.route("tweets")
