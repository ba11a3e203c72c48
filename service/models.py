"""``python -m service.models``: check a model config file before it goes live, and show every version's state.

    python -m service.models check models.yaml      # exit 0 if it would be accepted, else 1 with the reason
    python -m service.models status                 # each served model's versions: state, labels, canary, shadow

Promotion and rollback are edits of the file (move a label, change ``default``,
the canary's or the shadow's share): check the edited file, then save it where
``SENTIMENT_MODEL_CONFIG`` points; every process puts it in force within a
second or two. ``status`` reads the same settings as the service (the config,
the model store, Redis).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.config import load_settings
from service.model_config import ConfigError, describe, load_config, parse_config
from service.queue import RequestQueue, connect


def check(path: Path) -> int:
    settings = load_settings()
    try:
        config = parse_config(path.read_text(encoding="utf-8"), settings.model_store, settings.model_name)
    except (OSError, ConfigError) as exc:
        sys.stderr.write(f"{path}: refused: {exc}\n")
        return 1
    sys.stdout.write(f"{path}: valid: {describe(config)}\n")
    return 0


def status() -> int:
    settings = load_settings()
    try:
        config = load_config(settings)
    except ConfigError as exc:
        sys.stderr.write(f"the model config in force is not valid: {exc}\n")
        return 1
    if not settings.redis_url:
        sys.stderr.write("SENTIMENT_REDIS_URL is not set: the states of the versions live in Redis\n")
        return 1
    connection = connect(settings.redis_url, settings.redis_timeout_s)
    lines = []
    for policy in config.models.values():
        default = " (default model)" if policy.name == config.default_model else ""
        lines.append(f"{policy.name}{default}: default v{policy.default}")
        for kind in ("canary", "shadow"):
            split = getattr(policy, kind)
            if split:
                lines.append(f"  {kind}: v{split[0]}, {split[1]:.0%} of default traffic")
        for version in policy.versions:
            queue = RequestQueue(connection, settings.redis_key_prefix, policy.name, version)
            live = queue.live_workers(settings.heartbeat_ttl_s)
            labels = ", ".join(label for label, target in policy.labels.items() if target == version)
            state = "AVAILABLE" if live else "LOADING"
            lines.append(f"  v{version}: {state}, {live} worker(s), backlog {queue.backlog()}" + (f", labels: {labels}" if labels else ""))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.models", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    commands = p.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="validate a model config file against the model store")
    checking.add_argument("file", type=Path)
    commands.add_parser("status", help="every served version's state, from the config in force and Redis")
    args = p.parse_args(argv)
    return check(args.file) if args.command == "check" else status()


if __name__ == "__main__":
    sys.exit(main())
