"""``python -m service.redis_acl``: print the Redis users (an ACL file, or ACL SETUSER commands) for a prefix."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from service.redis_acl import (
    DEFAULT_REDIS_VERSION,
    MIN_PASSWORD_CHARS,
    PASSWORD_ENV,
    PLACEHOLDER_HASH,
    ROLES,
    acl_file,
    password_hash,
)


def _version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"a Redis version such as 7.4 (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def _role_env(text: str) -> tuple[str, str]:
    role, _, variable = text.partition("=")
    if role not in ROLES or not variable:
        raise argparse.ArgumentTypeError(f"ROLE=VARIABLE with ROLE one of {', '.join(ROLES)} (got {text!r})")
    return role, variable


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m service.redis_acl",
        description="Print the Redis users of the API, the workers and KEDA (an ACL file, or ACL SETUSER commands): "
        "each allowed only the commands and keys of its prefix it needs. Passwords come from environment variables "
        "and are written as SHA-256 hashes.",
    )
    main.add_argument("--prefix", default=os.environ.get("SENTIMENT_REDIS_KEY_PREFIX", "sentiment"), help="SENTIMENT_REDIS_KEY_PREFIX")
    main.add_argument(
        "--password-env",
        type=_role_env,
        action="append",
        default=[],
        metavar="ROLE=VARIABLE",
        help="read ROLE's password from VARIABLE (default: " + ", ".join(f"{r}={v}" for r, v in PASSWORD_ENV.items()) + ")",
    )
    main.add_argument(
        "--admin-password-env",
        metavar="VARIABLE",
        help="make `default` an admin with the password of VARIABLE (default: `default` is off; ACL file only)",
    )
    main.add_argument(
        "--placeholder",
        action="store_true",
        help=f"print without passwords: every user gets a hash nobody can log in with ({PLACEHOLDER_HASH[:8]}...)",
    )
    main.add_argument(
        "--redis-version",
        type=_version,
        default=DEFAULT_REDIS_VERSION,
        metavar="X.Y",
        help=f"the server's version (default: {'.'.join(map(str, DEFAULT_REDIS_VERSION))}; 7.0 and 7.1 cannot name CLIENT SETINFO)",
    )
    main.add_argument(
        "--format", choices=("aclfile", "commands"), default="aclfile", help="an ACL file, or ACL SETUSER commands for redis-cli"
    )
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    variables = {**PASSWORD_ENV, **dict(args.password_env)}
    hashes, problems = {}, []
    for role in ROLES:
        if args.placeholder:
            hashes[role] = PLACEHOLDER_HASH
            continue
        password = os.environ.get(variables[role], "")
        if len(password) < MIN_PASSWORD_CHARS:
            problems.append(f"{variables[role]} (the {role} user's password) is {'unset' if not password else 'too short'}")
        hashes[role] = password_hash(password)
    admin_hash = None
    if args.admin_password_env and not args.placeholder:
        admin = os.environ.get(args.admin_password_env, "")
        if len(admin) < MIN_PASSWORD_CHARS:
            problems.append(f"{args.admin_password_env} (the admin's password) is {'unset' if not admin else 'too short'}")
        admin_hash = password_hash(admin)
    if problems:
        sys.stderr.write(
            "python -m service.redis_acl: error: "
            + "; ".join(problems)
            + f" (at least {MIN_PASSWORD_CHARS} characters, e.g. `openssl rand -hex 32`), or --placeholder\n"
        )
        return 2
    try:
        text = acl_file(args.prefix, hashes, admin_hash, args.redis_version, commands=args.format == "commands")
    except ValueError as exc:
        sys.stderr.write(f"python -m service.redis_acl: error: {exc}\n")
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
