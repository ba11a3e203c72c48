"""Which model versions a worker holds, in step with the model config: loaded beside the loop, drained, then freed.

A version the config adds is loaded, compiled (or read from the compile
cache) and warmed on a thread of its own while the worker serves the others;
it joins the loop, and starts heartbeating (which makes it routable), only
when it is ready: no request ever waits for a load. A version the config
drops stops being routed at once (by the API processes); the worker goes on
answering what is queued for it until its stream has stayed empty for
``unload_grace_s`` (enough for every API process to have seen the change),
then signs off and lets its memory go.

At most ``max_loaded_versions`` are held, chosen in this order: every model's
default version, then canaries, shadows, labelled versions, the rest; and
``worker_models`` (e.g. ``sentiment:3,tweets``) restricts a worker to some
models or versions, for deployments with a worker pool per version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service import metrics
from service.config import Settings
from service.model_config import ServingConfig
from service.model_store import ModelVersion, resolve
from service.queue import RequestQueue
from service.worker.batching import BatchCollector
from service.worker.runner import BatchRunner, ScoringModel

log = logging.getLogger("service.worker")

AVAILABLE, UNLOADING = "AVAILABLE", "UNLOADING"
Key = tuple[str, int]


@dataclass
class Slot:
    """One model version the worker serves: its runner (model, stream), its batch collector, its state."""

    runner: BatchRunner
    collector: BatchCollector
    state: str = AVAILABLE
    empty_since: float | None = None  # UNLOADING: when its stream was first seen empty

    @classmethod
    def of(cls, runner: BatchRunner, settings: Settings) -> Slot:
        """A slot for ``runner``'s version, its batches within the settings' bounds."""
        collector = BatchCollector(
            max_texts=settings.max_batch_size, max_tokens=settings.max_batch_tokens, max_wait_s=settings.max_batch_wait_ms / 1000
        )
        return cls(runner, collector)

    @property
    def key(self) -> Key:
        version = self.runner.model.version
        return version.name, version.version

    @property
    def queue(self) -> RequestQueue:
        return self.runner.queue


def wanted_versions(config: ServingConfig, settings: Settings) -> list[Key]:
    """The versions this worker should hold, most needed first, at most ``max_loaded_versions``."""
    only = [part.strip() for part in (settings.worker_models or "").split(",") if part.strip()]

    def allowed(name: str, version: int) -> bool:
        return not only or name in only or f"{name}:{version}" in only

    ranked: list[Key] = []
    for rank in range(5):
        for policy in config.models.values():
            for version in policy.versions:
                roles = [
                    version == policy.default,
                    bool(policy.canary and policy.canary[0] == version),
                    bool(policy.shadow and policy.shadow[0] == version),
                    version in policy.labels.values(),
                    True,
                ]
                key = (policy.name, version)
                if roles[rank] and key not in ranked and allowed(*key):
                    ranked.append(key)
    if len(ranked) > settings.max_loaded_versions:
        log.warning("the config serves %d versions; this worker holds %d: %s left out", len(ranked), settings.max_loaded_versions,
                    ", ".join(f"{n} v{v}" for n, v in ranked[settings.max_loaded_versions :]))  # fmt: skip
    return ranked[: settings.max_loaded_versions]


@dataclass
class VersionLoader:
    """Loads what the config wants on background threads; the loop takes the ready ones and drains the dropped ones."""

    settings: Settings
    load: Callable[[ModelVersion], tuple[ScoringModel, float]]  # the model, and its step overhead in texts
    make_queue: Callable[[str, int], RequestQueue]
    wanted: list[Key] = field(default_factory=list)
    _held: set[Key] = field(default_factory=set)  # loaded and handed to the loop, until it lets them go
    _ready: list[Slot] = field(default_factory=list)
    _loading: set[Key] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def slot(self, key: Key) -> Slot:
        """Load ``key`` now, on this thread (what a worker serves from its start)."""
        version = resolve(self.settings.model_store / key[0], key[1])
        started = time.perf_counter()
        model, overhead = self.load(version)
        log.info("loaded %s v%s in %.1fs", key[0], key[1], time.perf_counter() - started)
        slot = Slot.of(BatchRunner(self.settings, model, self.make_queue(*key), overhead), self.settings)
        with self._lock:
            self._held.add(key)
        return slot

    def update(self, config: ServingConfig) -> None:
        """The config changed (the watcher's thread): start loading what is wanted and neither held nor loading."""
        wanted = wanted_versions(config, self.settings)
        with self._lock:
            self.wanted = wanted
            missing = [key for key in wanted if key not in self._held and key not in self._loading]
            self._loading.update(missing)
        for key in missing:
            threading.Thread(target=self._load_in_background, args=(key,), name=f"load-{key[0]}-{key[1]}", daemon=True).start()

    def _load_in_background(self, key: Key) -> None:
        try:
            slot = self.slot(key)  # held from here: the loop takes it, or lets it go if it is no longer wanted
        except Exception:
            log.exception("could not load %s v%s; the next config change tries again", *key)
            with self._lock:
                self._loading.discard(key)
            return
        with self._lock:
            self._loading.discard(key)
            self._ready.append(slot)

    def take_ready(self) -> list[Slot]:
        """Slots loaded since the last call that the config still wants (a version dropped meanwhile is let go)."""
        with self._lock:
            ready, self._ready = self._ready, []
            for slot in ready:
                if slot.key not in self.wanted:
                    self._held.discard(slot.key)
            return [slot for slot in ready if slot.key in self.wanted]

    def release(self, key: Key) -> None:
        """The loop has let ``key`` go: a later config that wants it loads it again."""
        with self._lock:
            self._held.discard(key)

    def loading(self) -> int:
        with self._lock:
            return len(self._loading)


def observe(slots: dict[Key, Slot], loading: int) -> None:
    """The worker's versions by state, for its metrics."""
    states = [slot.state for slot in slots.values()]
    metrics.VERSIONS_LOADED.labels(AVAILABLE).set(states.count(AVAILABLE))
    metrics.VERSIONS_LOADED.labels(UNLOADING).set(states.count(UNLOADING))
    metrics.VERSIONS_LOADED.labels("LOADING").set(loading)
