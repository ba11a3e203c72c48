"""``python -m service.keys create|revoke|list``: the key file's command line (a new key is printed once, last).

Exit status: 2 bad usage, 1 the command cannot be done (its message on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.keys.records import DEFAULT_SCOPES, NAME_PATTERN, SCOPES, KeyFile, KeyFileError, KeyRecord


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


class _Failure(Exception):
    """A command that cannot be done: its message goes to stderr, exit status 1."""


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on the file's folder: two commands at once must not lose each other's change."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)


def _limits(record: KeyRecord) -> str:
    return "unlimited" if record.rate_per_s is None else f"{record.rate_per_s:g}/s burst {record.burst}"


def _scopes(record: KeyRecord) -> str:
    return ",".join(s for s in SCOPES if s in record.scopes)


def _create(args: argparse.Namespace, path: Path) -> int:
    scopes = tuple(dict.fromkeys(args.scope or DEFAULT_SCOPES))
    with _locked(path):
        keys = KeyFile.load(path, missing_ok=True)
        try:
            updated, record, key = keys.create(args.name, scopes, args.rate_per_s, args.burst)
        except ValueError as exc:
            raise _Failure(str(exc)) from None
        updated.save(path)
    _out(f"created key {record.name!r} (id {record.key_id}, scopes {_scopes(record)}, {_limits(record)}) in {path}; it is shown once:")
    _out(key)
    return 0


def _revoke(args: argparse.Namespace, path: Path) -> int:
    with _locked(path):
        keys = KeyFile.load(path, missing_ok=True)
        try:
            updated = keys.revoke(args.name)
        except ValueError as exc:
            raise _Failure(f"{exc} in {path}") from None
        updated.save(path)
    _out(f"revoked key {args.name!r}: its record is removed from {path}; API processes stop accepting it within 2 s")
    return 0


def _list(args: argparse.Namespace, path: Path) -> int:
    keys = KeyFile.load(path, missing_ok=True)
    if not keys.records:
        _out(f"no keys in {path}" + ("" if path.exists() else " (no such file yet)"))
        return 0
    rows = [("NAME", "ID", "SCOPES", "LIMIT", "CREATED")]
    rows += [(r.name, r.key_id, _scopes(r), _limits(r), r.created_at) for r in keys.records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a key name is 1-64 letters, digits and ._- (got {text!r})")
    return text


def parser() -> argparse.ArgumentParser:
    file_env = os.environ.get("SENTIMENT_API_KEYS_FILE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--file",
        type=Path,
        default=file_env,
        required=not file_env,
        metavar="F",
        help="the key file (JSON; default: $SENTIMENT_API_KEYS_FILE" + (f" = {file_env}" if file_env else ", unset") + ")",
    )
    main = argparse.ArgumentParser(
        prog="python -m service.keys",
        description="Create, revoke and list the API keys of the key file (SENTIMENT_API_KEYS_FILE).\n"
        "The file keeps a salted hash of each key, never the key; API processes re-read it within 2 s of a change.",
        epilog="commands:\n"
        "  create NAME --file F [--scope predict|explain|admin ...] [--rate-per-s R] [--burst B]\n"
        "      prints what it created, then the key, shown once, as the last line\n"
        "  revoke NAME --file F\n"
        "  list --file F\n"
        "--file defaults to $SENTIMENT_API_KEYS_FILE. Exit status: 2 bad usage, 1 the command cannot be done.\n"
        "`python -m service.keys COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="{create,revoke,list}")
    create = commands.add_parser(
        "create", parents=[common], help="create a key; the key is printed once, as the last line", description="Create a key."
    )
    create.add_argument("name", type=_name, metavar="NAME", help="a unique name: 1-64 letters, digits and ._-")
    create.add_argument(
        "--scope",
        action="extend",
        nargs="+",
        choices=SCOPES,
        help="what the key may do (repeatable; default: predict): predict, explain, admin",
    )
    create.add_argument("--rate-per-s", type=_positive_float, metavar="R", help="requests per second allowed (default: unlimited)")
    create.add_argument(
        "--burst", type=_positive_int, metavar="B", help="the bucket's size: most requests at once (default: 2 x R, at least 1)"
    )
    revoke = commands.add_parser(
        "revoke", parents=[common], help="remove a key: it stops working within seconds", description="Revoke a key."
    )
    revoke.add_argument("name", type=_name, metavar="NAME")
    commands.add_parser("list", parents=[common], help="list the keys: names, scopes, limits, creation times (never a key)")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "create" and args.burst is not None and args.rate_per_s is None:
        _err("python -m service.keys create: error: --burst needs --rate-per-s")
        return 2
    path = Path(args.file)
    if not path.parent.is_dir():
        _err(f"python -m service.keys: error: no folder {path.parent}")
        return 1
    try:
        return {"create": _create, "revoke": _revoke, "list": _list}[args.command](args, path)
    except (_Failure, KeyFileError) as exc:
        _err(f"python -m service.keys {args.command}: error: {exc}")
        return 1
    except OSError as exc:
        _err(f"python -m service.keys {args.command}: error: {path}: {exc.strerror or exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
