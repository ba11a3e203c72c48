"""A request's key: what its headers present (`parse_presented`), and the keys in force in this process (`ApiKeys`).

Every API process re-reads the key file when it changes (`ApiKeys.start`: a
``stat`` every 0.5 s, as `service.model_config.ConfigWatcher` does), so a
created or revoked key is in force everywhere within a second or two. A
malformed new file is refused with a log line naming the problem, and the last
good keys stay; a missing file means no keys. No Flask here: the API hands
`parse_presented` the two headers' values.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import NamedTuple

from service.keys.records import KEY_LENGTH, KEY_PATTERN, MAX_PRESENTED_CHARS, SALT_BYTES, KeyFile, KeyFileError, KeyRecord

log = logging.getLogger("service.keys")


def _one_word(text: str) -> bool:
    """Visible ASCII only (no space, no control character)."""
    return all("!" <= c <= "~" for c in text)


class Presented(NamedTuple):
    """What a request presented: a key, or why what it sent is not one (neither: it sent nothing)."""

    key: str | None
    problem: str | None


def parse_presented(authorization: str | None, x_api_key: str | None) -> Presented:
    """The key of ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (the header values, or None when absent).

    Only the transport is checked here (scheme, length, ASCII); whether the key is
    one of ours is `ApiKeys.authenticate`'s question. Both headers may be sent if
    they carry the same key.
    """
    found: list[str] = []
    if authorization is not None:
        if len(authorization) > MAX_PRESENTED_CHARS:
            return Presented(None, f"Authorization header over {MAX_PRESENTED_CHARS} characters")
        if not authorization.isascii():
            return Presented(None, "Authorization header is not ASCII")
        parts = authorization.split(None, 1)
        if not parts:
            return Presented(None, "Authorization header is empty")
        if parts[0].lower() != "bearer":
            return Presented(None, f"Authorization: {parts[0][:20]} ... is not accepted; send `Authorization: Bearer <key>` or `X-API-Key`")
        token = parts[1].strip() if len(parts) == 2 else ""
        if not token:
            return Presented(None, "Authorization: Bearer without a key")
        if not _one_word(token):
            return Presented(None, "Authorization: Bearer with more than one word")
        found.append(token)
    if x_api_key is not None:
        if len(x_api_key) > MAX_PRESENTED_CHARS:
            return Presented(None, f"X-API-Key header over {MAX_PRESENTED_CHARS} characters")
        if not x_api_key.isascii():
            return Presented(None, "X-API-Key header is not ASCII")
        value = x_api_key.strip()
        if not value:
            return Presented(None, "X-API-Key header is empty")
        if not _one_word(value):
            return Presented(None, "X-API-Key header holds more than one word")
        found.append(value)
    if not found:
        return Presented(None, None)
    if len(found) == 2 and not hmac.compare_digest(found[0], found[1]):
        return Presented(None, "Authorization and X-API-Key carry different keys")
    return Presented(found[0], None)


class ApiKeys:
    """The keys in force in this process, re-read from their file when it changes (`start`).

    `authenticate` is what every request calls: a regular expression, a dict
    lookup, one HMAC-SHA256 and a constant-time comparison (a few microseconds).
    """

    def __init__(self, path: str | os.PathLike, interval_s: float = 0.5):
        """Read the file now: `KeyFileError` if it is malformed (a service should not start on it); missing: no keys."""
        self.path = Path(path)
        self.interval_s = interval_s
        self._dummy = KeyRecord("", "", secrets.token_bytes(SALT_BYTES), secrets.token_bytes(32))
        self._seen = self._fingerprint()
        self._install(KeyFile.load(self.path, missing_ok=True))
        if self._seen is None:
            log.warning("API key file %s does not exist: no key is accepted until it does", self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _install(self, keys: KeyFile) -> None:
        self._by_id = {r.key_id: r for r in keys.records}  # replaced whole, never changed: readers need no lock
        self._names = tuple(sorted(r.name for r in keys.records))

    def authenticate(self, presented: str) -> KeyRecord | None:
        """The record of ``presented`` if it is a key in force, else None; as long for an unknown key id as for a known one."""
        if len(presented) != KEY_LENGTH:
            return None
        match = KEY_PATTERN.fullmatch(presented)
        if match is None:
            return None
        record = self._by_id.get(match.group(1), self._dummy)
        equal = hmac.compare_digest(hmac.digest(record.salt, presented.encode("ascii"), "sha256"), record.digest)
        return record if equal and record is not self._dummy else None

    def names(self) -> tuple[str, ...]:
        """The names of the keys in force, sorted (a bounded set of metric labels)."""
        return self._names

    def records(self) -> tuple[KeyRecord, ...]:
        return tuple(self._by_id.values())

    # --- watching the file -------------------------------------------------------------

    def _fingerprint(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()  # follows symlinks: a Kubernetes Secret volume swaps a symlink
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def check(self) -> bool:
        """One look at the file; whether new keys came into force."""
        seen = self._fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen
        if seen is None:
            if self._by_id:
                log.warning("API key file %s is gone: no key is accepted until it is back", self.path)
            self._install(KeyFile())
            return True
        try:
            keys = KeyFile.load(self.path, missing_ok=True)
        except KeyFileError as exc:
            log.error("API key file refused, the last good keys stay in force: %s", exc)
            return False
        before = set(self._names)
        self._install(keys)
        after = set(self._names)
        log.info(
            "API key file %s in force: %d key(s)%s%s",
            self.path,
            len(after),
            f", added {', '.join(sorted(after - before))}" if after - before else "",
            f", removed {', '.join(sorted(before - after))}" if before - after else "",
        )
        return True

    def start(self) -> ApiKeys:
        """Re-read the file, on a daemon thread, within ``interval_s`` of each change."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="api-keys", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a watcher that dies would keep revoked keys working: log and go on
                log.exception("API key file watcher")
