"""Every setting of the service, read from ``SENTIMENT_*`` environment variables.

Values are validated when a process starts; a bad one stops it with a message
naming the variable, instead of failing later on the first request.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


class Settings(BaseSettings):
    """Settings shared by the launcher, the API processes and the inference workers."""

    model_config = SettingsConfigDict(
        env_prefix="SENTIMENT_", extra="ignore", frozen=True, use_attribute_docstrings=True, populate_by_name=True
    )

    redis_url: str | None = None
    """Redis to use (``redis://``, ``rediss://``, ``unix://``). Unset: ``make run`` starts an embedded one."""

    redis_key_prefix: str = "sentiment"
    """Prefix of every Redis key, so that several deployments can share one Redis."""

    redis_timeout_s: float = Field(0.5, gt=0, le=10)
    """Connect and command timeout for non-blocking Redis calls: how fast a dead Redis turns into a 503."""

    model_store: Path = ROOT / "model_store"
    """Folder holding ``<model_name>/<version>/`` SavedModels."""

    model_name: str = Field("sentiment", pattern=r"^[A-Za-z0-9_.-]+$")
    """Which model of the store to serve."""

    model_version: int | None = Field(None, ge=1)
    """Version to serve; unset serves the highest version present."""

    model_config_file: str | None = Field(None, validation_alias="SENTIMENT_MODEL_CONFIG")
    """A YAML file of served models, versions, labels, canary and shadow (docs/models.md), re-read while serving;
    unset: ``SENTIMENT_MODEL_NAME``'s highest version (or ``SENTIMENT_MODEL_VERSION``) alone."""

    max_texts_per_request: int = Field(64, ge=1, le=10_000)
    """Most texts in one ``POST /predict``; more gets 413."""

    max_text_chars: int = Field(50_000, ge=1)
    """Longest accepted text, in characters; longer gets 413."""

    long_text_policy: Literal["model", "head_tail"] = "model"
    """How texts longer than the model reads at once are read: ``model``: the version's recorded policy (windows
    for versions that have one); ``head_tail``: only their first and last tokens, as before windows."""

    max_windows_per_text: int | None = Field(None, ge=1)
    """Most windows one long text is read in (its middle is cut beyond); unset: the version's own bound."""

    max_windows_per_request: int = Field(256, ge=1)
    """Most windows (sequences the model runs) one request may need; more gets 413, so that one huge request
    cannot hold a worker for long while others wait."""

    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest accepted request body; larger gets 413 before it is read."""

    default_deadline_ms: int = Field(2000, ge=1)
    """Time a request may take end to end; a client may shorten it with ``X-Deadline-Ms``. Past it: 504."""

    queue_max_requests: int = Field(2048, ge=1)
    """Most requests waiting in Redis; beyond it ``/predict`` answers 503 with ``Retry-After``."""

    retry_after_s: int = Field(1, ge=1)
    """``Retry-After`` sent with 503 responses."""

    result_ttl_s: int = Field(30, ge=1)
    """How long a result waits in Redis for an API process that may have given up."""

    max_batch_size: int = Field(128, ge=1)
    """Most texts the worker runs through the model at once."""

    max_batch_wait_ms: float = Field(5.0, ge=0)
    """How long a worker waits, after the first text of a batch, for more to fill it."""

    max_batch_tokens: int = Field(32_768, ge=1)
    """Token budget of a batch: texts × longest sequence (padding included)."""

    step_overhead_texts: float | None = Field(None, ge=0)
    """Fixed cost of one LSTM step, in texts' worth of work: decides when a batch is split by length. Unset: measured at start."""

    claim_idle_ms: int = Field(1000, ge=50)
    """A request a worker took this long ago and has not acknowledged is taken over by another, if its worker stopped heartbeating."""

    heartbeat_interval_s: float = Field(1.0, gt=0)
    """How often a worker reports itself alive in Redis."""

    heartbeat_ttl_s: float = Field(3.0, gt=0)
    """A worker silent for this long counts as dead (readiness, takeover)."""

    compile_cache_dir: str = str(USER_CACHE / "sentiment-service" / "xla")
    """Where workers keep their compiled XLA programs (a folder per TensorFlow build), so that a restarted worker
    loads them instead of compiling again (seconds instead of 25-60 s); empty: no cache."""

    tf_threads: int = Field(1, ge=0)
    """TensorFlow intra-op threads per worker; 0 lets TensorFlow decide. One: the fused graph's steps are too small to share."""

    host: str = "127.0.0.1"
    """Interface the API and the workers' metrics bind to; the API's port comes from ``PORT`` (default 8000)."""

    auth: Literal["off", "api_keys"] = "off"
    """``api_keys``: every inference and model route needs a key of ``SENTIMENT_API_KEYS_FILE`` (``Authorization:
    Bearer`` or ``X-API-Key``), with its scopes and rate limit; ``off``: anyone who reaches the port, so the API then
    binds only to loopback unless ``SENTIMENT_ALLOW_ANONYMOUS=1`` (docs/security.md)."""

    api_keys_file: Path | None = None
    """The key file (``python -m service.keys``), re-read within 2 s of a change; on Kubernetes a mounted Secret."""

    allow_anonymous: bool = False
    """With ``SENTIMENT_AUTH=off``, let the API bind to an interface other than loopback: anyone reaching it may
    score as much as they like. Meant for a service behind a gateway that checks callers itself."""

    api_processes: int = Field(2, ge=1)
    """gunicorn worker processes of the API."""

    api_worker_class: Literal["gevent", "gthread"] = "gevent"
    """How an API process serves requests at once: ``gevent`` greenlets (a request waiting for its result costs
    no OS thread, no switch through the kernel; the default) or ``gthread`` OS threads."""

    api_concurrency: int = Field(256, ge=1)
    """Requests each API process serves at once (gthread: its threads); more wait for a place. The probes and the
    metrics are always answered."""

    api_connections: int = Field(1000, ge=1)
    """Client connections each API process holds open, idle keep-alive ones included (gunicorn's
    ``worker_connections``); apart from the requests at once, so that callers' connection pools do not keep new
    callers out."""

    max_loaded_versions: int = Field(4, ge=1)
    """Most model versions one worker holds at once (each costs its weights and compiled programs in memory);
    beyond it, the config's least needed versions are left to other workers."""

    worker_models: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:,-]*$")
    """Restricts a worker to some models or versions of the config, e.g. ``sentiment:3,tweets`` (a worker pool per
    version, scaled on its own stream); unset: every served version."""

    unload_grace_s: float = Field(5.0, ge=0)
    """A version dropped from the config is freed once its stream has stayed empty this long (every API process
    has stopped sending to it by then)."""

    inference_workers: int = Field(1, ge=1)
    """Inference worker processes ``make run`` starts (one per GPU; one on a CPU)."""

    worker_metrics_port: int = Field(9100, ge=0, le=65535)
    """Port of an inference worker's Prometheus metrics (``make run``'s worker i uses port + i); 0 disables."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of every process."""

    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line (for a log pipeline; the images use it); ``text``: readable at a terminal."""

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be longer than heartbeat_interval_s")
        if self.auth == "api_keys" and self.api_keys_file is None:
            raise ValueError("SENTIMENT_AUTH=api_keys needs SENTIMENT_API_KEYS_FILE (python -m service.keys create ...)")
        return self

    def anonymous_public_bind(self) -> str | None:
        """Why the API must not start as configured (no key asked for, on an interface others reach), or None."""
        if self.auth != "off" or self.allow_anonymous or _is_loopback(self.host):
            return None
        return (
            f"refusing to serve without API keys on {self.host}, an interface other than loopback: set SENTIMENT_AUTH=api_keys "
            "and SENTIMENT_API_KEYS_FILE (python -m service.keys create NAME --file F), or SENTIMENT_ALLOW_ANONYMOUS=1 if "
            "a gateway in front checks callers"
        )

    @property
    def model_dir(self) -> Path:
        return self.model_store / self.model_name


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def load_settings(**overrides) -> Settings:
    """Read the environment; on a bad value, exit with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"invalid setting SENTIMENT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else f"invalid settings: {e['msg']}"
            for e in exc.errors()
        ]
        sys.exit("\n".join(lines))


def _shown(value: object) -> str:
    """A default as a reader of the docs should see it: paths relative to the project or the home folder."""
    if value is None:
        return "unset"
    text = str(value)
    if isinstance(value, Path) and value.is_relative_to(ROOT):
        return f"{value.relative_to(ROOT)}/ (beside service/)"
    if text.startswith(f"{USER_CACHE}/"):
        return "${XDG_CACHE_HOME:-~/.cache}" + text[len(str(USER_CACHE)) :]
    return text


def settings_reference() -> str:
    """``docs/settings.md``: every setting, its default and its meaning, from the fields themselves (their docstrings).

    ``make docs`` writes the page; a test checks that it is what this returns.
    """
    lines = [
        "# Settings",
        "",
        "<!-- Generated by `make docs` (python -m service.config) from service/config.py: edit the code, not this page. -->",
        "",
        "Every setting is an environment variable, validated at start: a bad value stops the process with a message",
        "naming the variable. The same settings serve the launcher, the API processes and the inference workers.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("``", "`").replace("|", "\\|")
        variable = field.validation_alias if isinstance(field.validation_alias, str) else f"SENTIMENT_{name.upper()}"
        lines.append(f"| `{variable}` | `{_shown(field.default)}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_reference())
