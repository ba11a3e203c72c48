"""The Redis users of the service, with least privilege: what the API, the workers and KEDA may each send, in one place.

Every command below is one the code actually sends (service/queue.py,
service/results.py, the API's readiness check), including those its Lua scripts
call: Redis checks a script's ``redis.call`` against the ACL of the user running
it, keys included. Each role gets only the key patterns of its prefix it
touches (`acl_rules`), and on Redis 7 each command only on the keys it is sent
on (selectors), so a role can neither flush, reconfigure or list Redis, nor
read or write another deployment's keys, nor do another role's work.

``python -m service.redis_acl --prefix sentiment`` prints an ACL file (``aclfile``
in redis.conf, or ``--aclfile``) with the three users, their passwords taken
from ``SENTIMENT_REDIS_API_PASSWORD``, ``SENTIMENT_REDIS_WORKER_PASSWORD`` and
``SENTIMENT_REDIS_KEDA_PASSWORD`` and written as SHA-256 hashes (``#<hex>``),
plus a ``default`` user that is off (or an admin, ``--admin-password-env``);
``--format commands`` prints ``ACL SETUSER`` commands instead, for a managed
Redis. `apply_users` does the same through a connection.

What a client sends on connecting, with redis-py 8.1 (RESP3 by default) and
KEDA's go-redis v9: ``HELLO 3 AUTH <user> <password>`` (always allowed: Redis
exempts HELLO and AUTH from the ACL), ``CLIENT SETINFO LIB-NAME|LIB-VER`` (a
failure is ignored by both; allowed where the server knows it), ``SELECT`` for
a database other than 0, ``PING`` (redis-py's health check after 30 s idle,
KEDA's first call, the API's readiness), and redis-py's ``CLIENT
MAINT_NOTIFICATIONS ON`` (not allowed: redis-py ignores its refusal in its
default ``auto`` mode).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from service.queue import RequestQueue
from service.rate_limit import KEY_FORMAT as RATE_LIMIT_KEY_FORMAT  # one hash per API key name

ROLES = ("api", "worker", "keda")
PASSWORD_ENV = {
    "api": "SENTIMENT_REDIS_API_PASSWORD",
    "worker": "SENTIMENT_REDIS_WORKER_PASSWORD",
    "keda": "SENTIMENT_REDIS_KEDA_PASSWORD",
}
MIN_PASSWORD_CHARS = 16
# The Redis of docker/compose.yaml and k8s/base/redis.yaml: decides whether CLIENT SETINFO can be named.
DEFAULT_REDIS_VERSION = (7, 4)
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# A password hash nobody knows a password of: a placeholder that cannot be logged into.
PLACEHOLDER_HASH = "0" * 64

# What each role sends, by the keys it sends it on (None: commands without keys, or EVALSHA's, see _SCRIPT_KEYS),
# and where in the code. A command ``a|b`` is subcommand b of a.
_GRANTS: dict[str, dict[str | None, dict[str, str]]] = {
    "api": {
        None: {
            "evalsha": "`enqueue` (bounded XADD), `state` (/metrics): the queue's Lua scripts; the rate limit's script",
            "script|load": "redis-py's `register_script` after NOSCRIPT (a restarted Redis)",
            "time": "`STATE`; the rate limit's script",
        },
        "requests": {
            "xlen": "`backlog` (/readyz), `ENQUEUE`, `STATE`",
            "xadd": "`ENQUEUE`",
            "xinfo|groups": "`STATE` (entries in progress)",
            "xrange": "`STATE` (age of the oldest waiting entry)",
        },
        "workers": {"zcount": "`live_workers` (/readyz, routing), `STATE`"},
        "results": {"blpop": "`pop_results` (the result listener)", "lpop": "`pop_results`"},
        "rate_limits": {
            "hset": "the rate limit's script (token buckets)",
            "hmget": "the rate limit's script",
            "pexpire": "the rate limit's script",
        },
    },
    "worker": {
        "requests": {
            "xreadgroup": "`read`, `read_streams`",
            "xgroup|create": "`ensure_group` (XGROUP CREATE ... MKSTREAM)",
            "xgroup|delconsumer": "`forget_dead_consumers`",
            "xinfo|consumers": "`forget_dead_consumers`",
            "xpending": "`claim_abandoned`",
            "xclaim": "`claim_abandoned`",
            "xack": "`respond`, `finish`, `claim_abandoned`",
            "xdel": "`respond`, `finish`",
            "xlen": "`backlog` (unloading a version)",
        },
        "results": {"rpush": "`respond` (answers to each API process's list)", "expire": "`respond`"},
        "workers": {
            "zadd": "`heartbeat`",
            "zremrangebyscore": "`heartbeat`",
            "zrangebyscore": "`live_consumers` (`claim_abandoned`, `forget_dead_consumers`)",
            "zrem": "`sign_off`",
        },
        "worker_info": {"set": "`heartbeat` (the worker's details)", "del": "`sign_off`"},
    },
    "keda": {
        "requests": {"xlen": "the redis-streams scaler's `streamLength` (worker-scaledobject.yaml)"},
    },
}
# The keys a role's EVALSHA may name: its scripts' KEYS (`ENQUEUE`: a stream; `STATE`: a stream and a
# live-workers set; the rate limit's: a bucket). What the scripts then call is checked command by command.
_SCRIPT_KEYS = {"api": ("requests", "workers", "rate_limits"), "worker": (), "keda": ()}
_CONNECTING = {
    "ping": "redis-py's health check, KEDA's first call, /readyz",
    "select": "a database other than 0 in the URL (`databaseIndex` for KEDA)",
}
_SETINFO = {"client|setinfo": "redis-py and go-redis on connecting (named for Redis 6.x and 7.2 on; a refusal is ignored)"}


def key_patterns(prefix: str) -> dict[str, str]:
    """The key patterns (Redis globs) of one deployment, from the key formats of `service.queue.RequestQueue`."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"a key prefix for ACL rules is 1-100 letters, digits and ._:- (got {prefix!r})")
    return {
        "requests": RequestQueue.stream_key_format.format(prefix=prefix, name="*", version="*"),
        "results": RequestQueue.results_key_format.format(prefix=prefix, reply_to="*"),
        "workers": RequestQueue.workers_key_format.format(prefix=prefix, name="*", version="*"),
        "worker_info": RequestQueue.worker_info_key_format.format(prefix=prefix, consumer="*"),
        "rate_limits": RATE_LIMIT_KEY_FORMAT.format(prefix=prefix, name="*"),
    }


KEY_MEANINGS = {
    "requests": "request streams",
    "results": "result lists",
    "workers": "live workers",
    "worker_info": "worker details",
    "rate_limits": "rate-limit buckets",
}


def knows_client_setinfo(redis_version: tuple[int, int]) -> bool:
    """Whether ``+client|setinfo`` can be named in a rule: Redis 7.2 added it; 7.0 and 7.1 refuse a rule naming a
    subcommand they do not know (6.x accepts any name)."""
    return not (7, 0) <= tuple(redis_version)[:2] < (7, 2)


def has_selectors(redis_version: tuple[int, int]) -> bool:
    """Redis 7.0 added selectors, ``(~pattern +command ...)``: commands allowed on some keys only."""
    return tuple(redis_version)[:2] >= (7, 0)


def acl_rules(prefix: str, redis_version: tuple[int, int] = DEFAULT_REDIS_VERSION) -> dict[str, list[str]]:
    """``ACL SETUSER <role>`` rule tokens of each role (``api``, ``worker``, ``keda``), without a password.

    Each starts from nothing (``reset``: off, no password, no key, no channel, no
    command, no selector), then is switched on with only the commands it sends,
    on only the keys it sends them on: on Redis 7 each group of commands is a
    selector of its own key pattern (the worker may SET and DEL worker details,
    not the request streams); Redis 6 has no selectors, so there a role's
    commands apply to all its patterns. Add the password as ``>password`` or
    ``#<sha256 hex>`` (`setuser_args`).
    """
    patterns = key_patterns(prefix)
    connecting = [*_CONNECTING, *(_SETINFO if knows_client_setinfo(redis_version) else {})]
    rules = {}
    for role in ROLES:
        grants = _GRANTS[role]
        keyless = [*grants.get(None, {}), *connecting]
        groups = {kind: list(commands) for kind, commands in grants.items() if kind is not None}
        tokens = ["reset", "on", "resetchannels"]
        if has_selectors(redis_version):
            tokens += [*(f"~{patterns[kind]}" for kind in _SCRIPT_KEYS[role]), "-@all", *(f"+{c}" for c in keyless)]
            tokens += [f"(~{patterns[kind]} {' '.join(f'+{c}' for c in commands)})" for kind, commands in groups.items()]
        else:
            kinds = dict.fromkeys([*_SCRIPT_KEYS[role], *groups])
            commands = dict.fromkeys([c for group in groups.values() for c in group] + keyless)
            tokens += [*(f"~{patterns[kind]}" for kind in kinds), "-@all", *(f"+{c}" for c in commands)]
        rules[role] = tokens
    return rules


def password_hash(password: str) -> str:
    """How Redis keeps a password (``#<hex>`` in a rule): SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def setuser_args(
    role: str,
    prefix: str,
    *,
    password: str | None = None,
    password_sha256: str | None = None,
    redis_version: tuple[int, int] = DEFAULT_REDIS_VERSION,
) -> list[str]:
    """The arguments of ``ACL SETUSER <role> ...``: `acl_rules`' tokens and the password (as its hash)."""
    if (password is None) == (password_sha256 is None):
        raise ValueError("give exactly one of password or password_sha256")
    digest = password_hash(password) if password is not None else password_sha256
    if not re.fullmatch(r"[0-9a-f]{64}", digest or ""):
        raise ValueError("password_sha256 must be 64 lower-case hex digits")
    return [*acl_rules(prefix, redis_version)[role], f"#{digest}"]


def server_version(connection) -> tuple[int, int]:
    """(major, minor) of the server behind a redis-py connection (needs INFO: an admin's connection)."""
    text = connection.info("server")["redis_version"]
    major, minor, *_ = str(text).split(".")
    return int(major), int(minor)


def apply_users(connection, prefix: str, passwords: Mapping[str, str], redis_version: tuple[int, int] | None = None) -> None:
    """Create or reset the roles' users through ``connection`` (a user allowed ACL SETUSER), one ``ACL SETUSER`` each."""
    version = redis_version or server_version(connection)
    for role in ROLES:
        connection.execute_command("ACL", "SETUSER", role, *setuser_args(role, prefix, password=passwords[role], redis_version=version))


def acl_file(
    prefix: str,
    password_hashes: Mapping[str, str],
    admin_hash: str | None = None,
    redis_version: tuple[int, int] = DEFAULT_REDIS_VERSION,
    commands: bool = False,
) -> str:
    """An ACL file: ``user <role> <rules> #<hash>`` per role, and the ``default`` user off (an admin with
    ``admin_hash``). Without a ``default`` line Redis would create it with every right and no password.
    ``commands``: ``ACL SETUSER`` lines for redis-cli instead (no ``default`` line: a managed Redis has its own admin).
    """
    lines = []  # no comment: Redis refuses an ACL file with any line but `user ...`
    verb = "ACL SETUSER" if commands else "user"
    for role in ROLES:
        rules = setuser_args(role, prefix, password_sha256=password_hashes[role], redis_version=redis_version)
        lines.append(" ".join([verb, role, *rules]))
    if not commands:
        default = ["reset", "on", f"#{admin_hash}", "~*", "&*", "+@all"] if admin_hash else ["reset", "off", "resetchannels", "-@all"]
        lines.append(" ".join(["user", "default", *default]))
    return "\n".join(lines) + "\n"


def _shown(command: str) -> str:
    """``xgroup|create`` as a reader knows it (and without a ``|``, which would split a table's cell)."""
    return command.replace("|", " ").upper()


def rules_table(prefix: str = "sentiment") -> str:
    """docs/security.md's table of the users: each role's commands, the keys it may send them on, and why."""
    patterns = key_patterns(prefix)
    lines = [f"| role | command | on keys (prefix `{prefix}`) | sent by |", "|---|---|---|---|"]
    for role in ROLES:
        first = True
        for kind, commands in _GRANTS[role].items():
            for command, where in commands.items():
                if kind is not None:
                    keys = f"`{patterns[kind]}` ({KEY_MEANINGS[kind]})"
                elif command == "evalsha":
                    keys = "<br>".join(f"`{patterns[k]}`" for k in _SCRIPT_KEYS[role]) + "<br>(the scripts' KEYS)"
                else:
                    keys = "none"
                lines.append(f"| {f'`{role}`' if first else ''} | `{_shown(command)}` | {keys} | {where} |")
                first = False
    for command, where in {**_CONNECTING, **_SETINFO}.items():
        lines.append(f"| every role | `{_shown(command)}` | none | {where} |")
    return "\n".join(lines) + "\n"
