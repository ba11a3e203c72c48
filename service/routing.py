"""Which model version answers a request, and which one also sees it as a shadow; in step with the model config.

A request names a model (or gets the default model), and a version, a label
or neither. Naming neither is *default traffic*: it goes to the model's default
version, except the canary's share, and the shadow's share is also mirrored to
the shadow version. Both shares are taken per request from a hash of its
request id: the split is stable for a request id a client sends again, and as
random as the ids are otherwise (the API generates random ones). A canary or
shadow version without a live worker takes nothing: default traffic never sees
an error for them. An unknown model, version or label is 404; a configured
version no worker serves yet (``LOADING``) is 503 with ``Retry-After``.

Every served version has its own `Scorer` (its tokenizer, its queue stream);
the router swaps them as the config changes, while requests go on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from service import metrics
from service.config import Settings
from service.errors import BadRequest, NotFound
from service.model_config import ModelPolicy, ServingConfig
from service.model_store import ModelVersion, is_complete, resolve
from service.results import ResultListener
from service.scoring import Scorer

AVAILABLE, LOADING, UNLOADING = "AVAILABLE", "LOADING", "UNLOADING"


@dataclass(frozen=True)
class Route:
    """Where a request goes: its scorer, how it was chosen (``default``, ``canary``, ``named``), and a shadow to mirror to."""

    scorer: Scorer
    kind: str
    shadow: Scorer | None = None


def share_of(request_id: str, salt: str) -> float:
    """Where ``request_id`` falls in [0, 1), the same every time: a BLAKE2 hash of the salted id (the salts make the
    canary's and the shadow's draws independent; CRC-32, being linear, would correlate them)."""
    return int.from_bytes(hashlib.blake2b(f"{salt}:{request_id}".encode(), digest_size=8).digest()) / 2**64


class ModelRouter:
    """The served versions' scorers and the routing rules of the config in force."""

    def __init__(
        self,
        settings: Settings,
        config: ServingConfig,
        make_scorer: Callable[[ModelVersion], Scorer],
        live_workers: Callable[[str, int], int],
        listener: ResultListener | None = None,
    ):
        self.settings = settings
        self.listener = listener  # the one every scorer shares, to stop with the process
        self._make_scorer = make_scorer
        self._live_workers = live_workers  # of any version, configured or not (a draining one)
        self._config = config
        self._scorers: dict[tuple[str, int], Scorer] = {}
        self.apply(config)

    @property
    def config(self) -> ServingConfig:
        return self._config

    def apply(self, config: ServingConfig) -> None:
        """Put ``config`` in force: scorers for new versions (their vocabularies read now, off the request path)."""
        scorers = {}
        for name, version in config.versions():
            scorer = self._scorers.get((name, version))
            scorers[(name, version)] = scorer or self._make_scorer(resolve(self.settings.model_store / name, version))
        self._config, self._scorers = config, scorers  # requests read the pair as one, before or after

    def policy(self, model: str | None) -> ModelPolicy:
        config = self._config
        name = model or config.default_model
        policy = config.models.get(name)
        if policy is None:
            raise NotFound(f"unknown model {name!r}: this server serves {', '.join(config.models)}")
        return policy

    def scorer(self, model: str, version: int) -> Scorer:
        """A configured version's scorer (404 if it is not served)."""
        found = self._scorers.get((model, version))
        if found is None:
            self._unknown_version(self.policy(model), version)
        return found

    def route(self, model: str | None = None, version: int | None = None, label: str | None = None, request_id: str = "") -> Route:
        """The version that answers this request, and a shadow to mirror it to, if any."""
        if version is not None and label is not None:
            raise BadRequest('give a "version" or a "label", not both')
        policy = self.policy(model)
        shadow = None
        if version is not None or label is not None:
            kind, chosen = "named", self._named(policy, version, label)
        else:
            kind, chosen = "default", policy.default
            canary = policy.canary
            if canary and canary[0] != chosen and share_of(request_id, "canary") < canary[1] and self._alive(policy.name, canary[0]):
                kind, chosen = "canary", canary[0]
            if policy.shadow and policy.shadow[0] != chosen and share_of(request_id, "shadow") < policy.shadow[1]:
                shadow = self._scorers[(policy.name, policy.shadow[0])]
        metrics.ROUTED.labels(policy.name, str(chosen), kind).inc()
        return Route(self._scorers[(policy.name, chosen)], kind, shadow)  # no live worker: its Scorer answers 503

    def _alive(self, model: str, version: int) -> bool:
        return self._scorers[(model, version)].workers_alive()

    def _named(self, policy: ModelPolicy, version: int | None, label: str | None) -> int:
        if label is not None:
            if label not in policy.labels:
                known = ", ".join(policy.labels) or "none"
                raise NotFound(f"model {policy.name!r} has no label {label!r} (labels: {known})")
            return policy.labels[label]
        if version not in policy.versions:
            self._unknown_version(policy, version)
        return version

    def _unknown_version(self, policy: ModelPolicy, version: int) -> None:
        served = ", ".join(map(str, policy.versions))
        on_disk = is_complete(self.settings.model_store / policy.name / str(version))
        note = f" (version {version} is in the model store, but not served)" if on_disk else ""
        raise NotFound(f"model {policy.name!r} has no version {version} served (served: {served}){note}")

    def states(self, model: str) -> list[dict]:
        """Every version of ``model`` that is served or still draining: ``{"version", "state", "labels"}``, ascending.

        ``AVAILABLE``: configured and a live worker serves it; ``LOADING``: configured, no worker yet;
        ``UNLOADING``: no longer configured, and a worker still answers what was queued for it.
        """
        policy = self.policy(model)
        listed = []
        folder = self.settings.model_store / policy.name
        on_disk = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []
        for version in sorted(set(on_disk) | set(policy.versions)):
            live = self._live_workers(policy.name, version) > 0
            if version in policy.versions:
                state = AVAILABLE if live else LOADING
            elif live:
                state = UNLOADING
            else:
                continue
            labels = sorted(label for label, target in policy.labels.items() if target == version)
            listed.append({"version": version, "state": state, "labels": labels})
        return listed
