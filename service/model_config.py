"""Which models and versions are served, and how traffic reaches them: the model config file, checked and re-read.

``SENTIMENT_MODEL_CONFIG`` names a YAML file, in the spirit of TensorFlow
Serving's model server config (``model_version_policy``, ``version_labels``)::

    models:
      sentiment:                        # a folder of the model store
        versions: [2, 3]                # served versions; or `latest: N`
        labels: {stable: 3, canary: 2}  # names for versions
        default: stable                 # a label or a version: what a request that names neither gets
        canary: {label: canary, percent: 10}   # that share of default traffic goes to the label's version
        shadow: {label: canary, percent: 50}   # that share is also sent there; its answers are only compared

Every process (API processes and workers) reads it and re-reads it when it
changes (`ConfigWatcher`): a valid change is in force within a second; an
invalid file is refused with a log line naming the problem, and the last good
config stays in force. Without the variable, the config is what the settings
say: the highest version (or ``SENTIMENT_MODEL_VERSION``) of
``SENTIMENT_MODEL_NAME``, as before the file existed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.config import Settings
from service.model_store import is_complete

log = logging.getLogger("service.model_config")

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
LABEL_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class ConfigError(ValueError):
    """The config file cannot be used; the message names the problem."""


class _Split(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str
    percent: float = Field(ge=0, le=100)


class _ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    versions: list[int] | None = None
    latest: int | None = Field(None, ge=1)
    labels: dict[str, int] = Field(default_factory=dict)
    default: str | int | None = None
    canary: _Split | None = None
    shadow: _Split | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> _ModelEntry:
        if (self.versions is None) == (self.latest is None):
            raise ValueError("give exactly one of `versions: [...]` or `latest: N`")
        if self.versions is not None and (not self.versions or min(self.versions) < 1):
            raise ValueError("`versions` must list at least one version, each 1 or more")
        return self


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    models: dict[str, _ModelEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ModelPolicy:
    """One model's served versions and routing, resolved against the model store."""

    name: str
    versions: tuple[int, ...]  # ascending
    labels: Mapping[str, int] = field(default_factory=dict)
    default: int = 0
    canary: tuple[int, float] | None = None  # (version, share of default traffic in [0, 1])
    shadow: tuple[int, float] | None = None


@dataclass(frozen=True)
class ServingConfig:
    """Every served model's policy, and the model a request that names none gets."""

    models: Mapping[str, ModelPolicy]
    default_model: str

    def versions(self) -> list[tuple[str, int]]:
        """Every (model, version) served, models in order, versions ascending."""
        return [(name, version) for name, policy in self.models.items() for version in policy.versions]


def _served_versions(store: Path, name: str, entry: _ModelEntry) -> tuple[int, ...]:
    present = sorted(int(p.name) for p in (store / name).glob("*") if p.name.isdigit() and is_complete(p))
    if entry.latest is not None:
        if not present:
            raise ConfigError(f"models.{name}: no complete version in {store / name}")
        return tuple(present[-entry.latest :])
    missing = sorted(set(entry.versions) - set(present))
    if missing:
        raise ConfigError(f"models.{name}.versions: {', '.join(map(str, missing))} not in the model store ({store / name})")
    return tuple(sorted(set(entry.versions)))


def _version_of(name: str, where: str, reference: str | int, versions: tuple[int, ...], labels: Mapping[str, int]) -> int:
    """A label's or a version's number, checked to be served."""
    if isinstance(reference, str) and not reference.isdigit():
        if reference not in labels:
            raise ConfigError(f"models.{name}.{where}: no label {reference!r} (labels: {', '.join(labels) or 'none'})")
        return labels[reference]
    version = int(reference)
    if version not in versions:
        raise ConfigError(f"models.{name}.{where}: version {version} is not served (served: {', '.join(map(str, versions))})")
    return version


def _policy(store: Path, name: str, entry: _ModelEntry) -> ModelPolicy:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"models.{name}: a model name is 1-64 letters, digits and ._-")
    versions = _served_versions(store, name, entry)
    for label, version in entry.labels.items():
        if not re.fullmatch(LABEL_PATTERN, label):
            raise ConfigError(f"models.{name}.labels.{label}: a label is a lower-case letter, then up to 31 of a-z 0-9 _ -")
        _version_of(name, f"labels.{label}", version, versions, {})
    labels = dict(entry.labels)
    default = _version_of(name, "default", entry.default, versions, labels) if entry.default is not None else versions[-1]
    splits = {}
    for kind in ("canary", "shadow"):
        split = getattr(entry, kind)
        if split is not None:
            splits[kind] = (_version_of(name, f"{kind}.label", split.label, versions, labels), split.percent / 100)
    return ModelPolicy(name, versions, labels, default, splits.get("canary"), splits.get("shadow"))


def parse_config(text: str, store: Path, default_model: str) -> ServingConfig:
    """A config file's text, checked against the model store; `ConfigError` says what is wrong."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    try:
        parsed = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        raise ConfigError(problems) from None
    models = {name: _policy(store, name, entry) for name, entry in parsed.models.items()}
    return ServingConfig(models, default_model if default_model in models else next(iter(models)))


def from_settings(settings: Settings) -> ServingConfig:
    """The config without a file: one model, its highest version (or the one the settings name)."""
    from service.model_store import resolve

    version = resolve(settings.model_dir, settings.model_version)
    policy = ModelPolicy(settings.model_name, (version.version,), {}, version.version)
    return ServingConfig({settings.model_name: policy}, settings.model_name)


def load_config(settings: Settings) -> ServingConfig:
    """The config in force at start: the file's (`ConfigError` if it is wrong), or the settings'."""
    if not settings.model_config_file:
        return from_settings(settings)
    path = Path(settings.model_config_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, settings.model_store, settings.model_name)


class ConfigWatcher:
    """Re-reads the config file when it (or, for ``latest: N``, the model store) changes, and hands on a valid one.

    Checks every ``interval_s`` (a ``stat`` and a folder listing): a change is in
    force within that, plus the time to read the file. A refused file is logged
    once per change, and ``on_change`` is not called: the last good config stays.
    """

    def __init__(self, settings: Settings, current: ServingConfig, on_change: Callable[[ServingConfig], None], interval_s: float = 0.5):
        self.settings = settings
        self.current = current
        self.on_change = on_change
        self.interval_s = interval_s
        self._seen = self._fingerprint()
        self._stop = threading.Event()

    def _fingerprint(self) -> tuple:
        stamp: tuple = ()
        if self.settings.model_config_file:
            try:
                stat = Path(self.settings.model_config_file).stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except OSError:
                pass
        folders = [self.settings.model_store / name for name in self.current.models]
        return stamp, tuple(tuple(sorted(os.listdir(folder))) for folder in folders if folder.is_dir())

    def check(self) -> bool:
        """One look; whether a new config came into force."""
        seen = self._fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            config = load_config(self.settings)
        except ConfigError as exc:
            log.error("model config %s refused, the last good one stays in force: %s", self.settings.model_config_file, exc)
            return False
        if config == self.current:
            return False
        self.current = config
        log.info("model config %s in force: %s", self.settings.model_config_file, describe(config))
        self.on_change(config)
        return True

    def start(self) -> ConfigWatcher:
        if self.settings.model_config_file:
            threading.Thread(target=self._run, name="model-config", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a watcher that dies would freeze the config: log and go on
                log.exception("model config watcher")


def describe(config: ServingConfig) -> str:
    """One line: each model's versions, labels, default, canary and shadow."""
    parts = []
    for policy in config.models.values():
        text = f"{policy.name} v{','.join(map(str, policy.versions))} default v{policy.default}"
        if policy.labels:
            text += " labels " + ",".join(f"{k}=v{v}" for k, v in policy.labels.items())
        for kind in ("canary", "shadow"):
            split = getattr(policy, kind)
            if split:
                text += f" {kind} v{split[0]} {split[1]:.0%}"
        parts.append(text)
    return "; ".join(parts)
