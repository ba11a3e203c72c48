"""API keys: the real ``python -m service.keys`` command, the file it keeps, checking a key, and re-reading the file."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time

import pytest

from service.config import ROOT
from service.keys import KEY_LENGTH, MAX_PRESENTED_CHARS, ApiKeys, KeyFile, KeyFileError, parse_presented
from tests.helpers import wait_until


def keys_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    return subprocess.run(
        [sys.executable, "-m", "service.keys", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def create(path, name: str, *options: str) -> str:
    """A new key through the command line: its last line."""
    done = keys_cli("create", name, "--file", str(path), *options)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and name in lines[0] and lines[-1] not in lines[0]
    return lines[-1]


@pytest.fixture
def key_file(tmp_path):
    (tmp_path / "secrets").mkdir()
    return tmp_path / "secrets" / "api-keys.json"


def test_help_names_the_commands_and_their_options():
    done = keys_cli("--help")
    assert done.returncode == 0
    for word in ("create", "revoke", "list", "--file", "--scope", "--rate-per-s", "--burst"):
        assert word in done.stdout, word
    done = keys_cli("create", "--help")
    assert done.returncode == 0
    for option in ("--file", "--scope", "--rate-per-s", "--burst", "predict", "explain", "admin"):
        assert option in done.stdout, option


def test_create_prints_the_key_last_and_the_file_keeps_only_a_salted_hash(key_file):
    key = create(key_file, "shop", "--scope", "predict", "--scope", "explain", "--rate-per-s", "5")
    assert len(key) == KEY_LENGTH and key.startswith("sk_")
    key_id, secret = key[3:11], key[12:]
    text = key_file.read_text()
    assert key not in text and secret not in text and secret[:16] not in text  # neither the key nor its secret part
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (record,) = json.loads(text)["keys"]
    assert json.loads(text)["version"] == 1
    assert record["name"] == "shop" and record["key_id"] == key_id
    assert record["scopes"] == ["predict", "explain"] and record["rate_per_s"] == 5.0 and record["burst"] == 10
    assert len(record["salt"]) >= 32 and len(record["hash"]) == 64 and record["created_at"].endswith("Z")
    assert [p.name for p in key_file.parent.iterdir()] == [key_file.name]  # no temporary file left behind

    keys = ApiKeys(key_file)
    found = keys.authenticate(key)
    assert found is not None and found.name == "shop" and found.allows("explain") and not found.allows("admin")
    assert found.rate_per_s == 5.0 and found.burst == 10
    assert "salt" not in repr(found) and found.digest.hex() not in repr(found)


def test_two_keys_differ_and_each_is_only_itself(key_file):
    first = create(key_file, "a")
    second = create(key_file, "b", "--scope", "admin")
    keys = ApiKeys(key_file)
    assert keys.names() == ("a", "b")
    assert keys.authenticate(first).name == "a" and keys.authenticate(second).name == "b"
    assert keys.authenticate(second).scopes == frozenset({"admin"}) and keys.authenticate(first).scopes == frozenset({"predict"})
    assert keys.authenticate(first).rate_per_s is None and keys.authenticate(first).burst is None
    # The right id with another secret, a changed last character, a key of the right shape that was never made:
    wrong_secret = first[:12] + second[12:]
    changed = first[:-1] + ("A" if first[-1] != "A" else "B")
    unknown = "sk_00000000_" + first[12:]
    for wrong in (wrong_secret, changed, unknown, first.upper(), first + "x", first[:-1], "", "sk_", "Bearer " + first, "ключ" * 14):
        assert keys.authenticate(wrong) is None, wrong


def test_list_shows_names_scopes_and_limits_but_never_a_key(key_file):
    key = create(key_file, "partner", "--scope", "predict", "explain", "--rate-per-s", "2.5", "--burst", "7")
    create(key_file, "internal")
    done = keys_cli("list", "--file", str(key_file))
    assert done.returncode == 0, done.stderr
    assert "partner" in done.stdout and "predict,explain" in done.stdout and "2.5/s burst 7" in done.stdout
    assert "internal" in done.stdout and "unlimited" in done.stdout
    record = json.loads(key_file.read_text())["keys"][0]
    assert key[12:] not in done.stdout and record["hash"] not in done.stdout and record["salt"] not in done.stdout


def test_revoke_removes_the_key_and_errors_exit_non_zero(key_file):
    key = create(key_file, "temp")
    keep = create(key_file, "keep")
    done = keys_cli("revoke", "temp", "--file", str(key_file))
    assert done.returncode == 0 and "revoked" in done.stdout and "removed" in done.stdout
    assert [r["name"] for r in json.loads(key_file.read_text())["keys"]] == ["keep"]
    keys = ApiKeys(key_file)
    assert keys.authenticate(key) is None and keys.authenticate(keep).name == "keep"

    again = keys_cli("revoke", "temp", "--file", str(key_file))
    assert again.returncode == 1 and "no key named 'temp'" in again.stderr and not again.stdout
    twice = keys_cli("create", "keep", "--file", str(key_file))
    assert twice.returncode == 1 and "exists already" in twice.stderr and not twice.stdout
    assert ApiKeys(key_file).authenticate(keep) is not None  # a refused create changes nothing

    for usage in (
        ["create", "bad name!", "--file", str(key_file)],
        ["create", "x", "--file", str(key_file), "--scope", "root"],
        ["create", "x", "--file", str(key_file), "--rate-per-s", "-1"],
        ["create", "x", "--file", str(key_file), "--burst", "3"],  # a burst without a rate
        ["create", "x"],  # no file, no SENTIMENT_API_KEYS_FILE
        ["rotate", "x", "--file", str(key_file)],
    ):
        done = keys_cli(*usage)
        assert done.returncode == 2 and done.stderr and not done.stdout.strip(), usage


def test_the_file_may_come_from_the_environment(key_file):
    done = keys_cli("create", "env", env={"SENTIMENT_API_KEYS_FILE": str(key_file)})
    assert done.returncode == 0, done.stderr
    assert ApiKeys(key_file).authenticate(done.stdout.splitlines()[-1]).name == "env"


def test_a_malformed_file_is_refused_with_its_problem_named(key_file):
    create(key_file, "ok")
    good = json.loads(key_file.read_text())
    cases = {
        "not valid JSON": "{",
        "version must be 1": json.dumps({**good, "version": 2}),
        "scopes": json.dumps({"version": 1, "keys": [{**good["keys"][0], "scopes": ["root"]}]}),
        "missing hash": json.dumps({"version": 1, "keys": [{k: v for k, v in good["keys"][0].items() if k != "hash"}]}),
        "two keys have the name 'ok'": json.dumps({"version": 1, "keys": [good["keys"][0], {**good["keys"][0], "key_id": "0badc0de"}]}),
        "rate_per_s": json.dumps({"version": 1, "keys": [{**good["keys"][0], "rate_per_s": "fast"}]}),
    }
    for problem, text in cases.items():
        key_file.write_text(text)
        with pytest.raises(KeyFileError, match=problem):
            KeyFile.load(key_file)
        with pytest.raises(KeyFileError):
            ApiKeys(key_file)  # a service does not start on a malformed file
        done = keys_cli("list", "--file", str(key_file))
        assert done.returncode == 1 and problem.split()[0] in done.stderr, (problem, done.stderr)


def test_a_missing_file_means_no_keys(key_file):
    keys = ApiKeys(key_file)
    assert keys.names() == () and keys.authenticate("sk_00000000_" + "A" * 43) is None
    done = keys_cli("list", "--file", str(key_file))
    assert done.returncode == 0 and "no keys" in done.stdout


def test_the_watcher_sees_a_new_key_a_revocation_and_keeps_the_last_good_keys(key_file, caplog):
    kept = create(key_file, "kept")
    revoked = create(key_file, "revoked")
    keys = ApiKeys(key_file, interval_s=0.5).start()
    try:
        assert keys.authenticate(revoked) is not None
        assert keys_cli("revoke", "revoked", "--file", str(key_file)).returncode == 0
        started = time.monotonic()
        wait_until(lambda: keys.authenticate(revoked) is None, 2.0, what="the revocation to be in force")
        assert time.monotonic() - started < 2.0
        assert keys.authenticate(kept) is not None and keys.names() == ("kept",)

        added = create(key_file, "added")
        wait_until(lambda: keys.authenticate(added) is not None, 2.0, what="the new key to be in force")

        with caplog.at_level(logging.ERROR, logger="service.keys"):
            key_file.write_text('{"version": 1, "keys": [')  # a broken edit
            wait_until(lambda: "refused" in caplog.text, 2.0, what="the malformed file to be refused")
        assert keys.authenticate(kept) is not None and keys.authenticate(added) is not None  # the last good keys stay

        key_file.unlink()  # gone: no key works
        wait_until(lambda: keys.authenticate(kept) is None, 2.0, what="a removed file to mean no keys")
        assert keys.names() == ()
    finally:
        keys.stop()


def test_parse_presented_takes_bearer_or_x_api_key_and_names_what_is_wrong():
    key = "sk_0123abcd_" + "x" * 43
    assert parse_presented(f"Bearer {key}", None) == (key, None)
    assert parse_presented(f"bearer   {key} ", None) == (key, None)  # the scheme is case-insensitive
    assert parse_presented(None, key) == (key, None)
    assert parse_presented(None, f" {key} ") == (key, None)
    assert parse_presented(f"Bearer {key}", key) == (key, None)  # both, the same key
    assert parse_presented(None, None) == (None, None)  # nothing sent

    def problem(authorization, x_api_key=None) -> str:
        key, reason = parse_presented(authorization, x_api_key)
        assert key is None and reason
        return reason

    assert "Basic" in problem("Basic dXNlcjpwYXNz")
    assert "Bearer without a key" in problem("Bearer ")
    assert str(MAX_PRESENTED_CHARS) in problem("Bearer " + "a" * MAX_PRESENTED_CHARS)
    assert str(MAX_PRESENTED_CHARS) in problem(None, "a" * (MAX_PRESENTED_CHARS + 1))
    assert "ASCII" in problem("Bearer sk_clé")
    assert "ASCII" in problem(None, "ключ")
    assert "empty" in problem(None, "  ")
    assert "different keys" in problem(f"Bearer {key}", key[:-1] + "y")
    assert problem("Token abc")  # any other scheme
