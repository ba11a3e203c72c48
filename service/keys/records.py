"""The key file: one record per key (never the key itself), read strictly and written atomically.

A key is ``sk_<key id>_<secret>``: ``sk_``, 8 hex digits that name its record,
``_``, then 32 random bytes in base64url (43 characters); 55 ASCII characters in
all. The file keeps, per key, its name, key id, a random salt and
``HMAC-SHA256(salt, key)``, its scopes, its rate limit and its creation time
(docs/security.md shows one). A key is 256 random bits, so one keyed hash is the
right check: a slow password hash would only cost CPU, nobody can guess such a key.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FILE_VERSION = 1
SCOPES = ("predict", "explain", "admin")
DEFAULT_SCOPES = ("predict",)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_PREFIX = "sk_"
KEY_ID_HEX = 8
SECRET_BYTES = 32
KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_HEX + 1 + math.ceil(SECRET_BYTES * 4 / 3)  # 55: base64url without padding
KEY_PATTERN = re.compile(rf"sk_([0-9a-f]{{{KEY_ID_HEX}}})_[A-Za-z0-9_-]{{{KEY_LENGTH - len(KEY_PREFIX) - KEY_ID_HEX - 1}}}")
SALT_BYTES = 16
MAX_PRESENTED_CHARS = 512  # a header value longer than this is refused before anything else looks at it


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the problem."""


@dataclass(frozen=True)
class KeyRecord:
    """One key as the file keeps it: never the key itself."""

    name: str
    key_id: str
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)  # HMAC-SHA256(salt, key)
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    rate_per_s: float | None = None  # None: no rate limit
    burst: int | None = None  # the bucket's size; None when there is no rate limit
    created_at: str = ""  # ISO 8601, UTC

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "key_id": self.key_id,
            "salt": self.salt.hex(),
            "hash": self.digest.hex(),
            "scopes": [s for s in SCOPES if s in self.scopes],
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "created_at": self.created_at,
        }


def key_digest(salt: bytes, key: str) -> bytes:
    """HMAC-SHA256 of ``key`` under ``salt`` (one call into OpenSSL)."""
    return hmac.digest(salt, key.encode("ascii"), "sha256")


def new_key(taken_ids: Iterable[str] = ()) -> tuple[str, str]:
    """A fresh random key and its key id (unique among ``taken_ids``)."""
    taken = set(taken_ids)
    while True:
        key_id = secrets.token_hex(KEY_ID_HEX // 2)
        if key_id not in taken:
            break
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    return f"{KEY_PREFIX}{key_id}_{secret}", key_id


def default_burst(rate_per_s: float) -> int:
    """A bucket of two seconds' worth of requests, at least one."""
    return max(1, math.ceil(2 * rate_per_s))


def _check_limits(rate_per_s: float | None, burst: int | None) -> tuple[float | None, int | None]:
    if rate_per_s is None:
        if burst is not None:
            raise ValueError("a burst needs a rate (rate_per_s)")
        return None, None
    if not math.isfinite(rate_per_s) or rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s!r}")
    if burst is None:
        burst = default_burst(rate_per_s)
    if burst < 1:
        raise ValueError(f"burst must be 1 or more, not {burst!r}")
    return float(rate_per_s), burst


def _record_of(raw: object, where: str) -> KeyRecord:
    """One entry of the file's ``keys``, checked field by field."""
    if not isinstance(raw, dict):
        raise KeyFileError(f"{where}: not an object")
    expected = {"name", "key_id", "salt", "hash", "scopes", "rate_per_s", "burst", "created_at"}
    missing, unknown = expected - raw.keys(), raw.keys() - expected
    if missing:
        raise KeyFileError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise KeyFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise KeyFileError(f"{where}.name: 1-64 letters, digits and ._- (got {name!r})")
    where = f"{where} ({name})"
    key_id = raw["key_id"]
    if not isinstance(key_id, str) or not re.fullmatch(rf"[0-9a-f]{{{KEY_ID_HEX}}}", key_id):
        raise KeyFileError(f"{where}.key_id: {KEY_ID_HEX} lower-case hex digits")
    try:
        salt = bytes.fromhex(raw["salt"]) if isinstance(raw["salt"], str) else b""
        digest = bytes.fromhex(raw["hash"]) if isinstance(raw["hash"], str) else b""
    except ValueError:
        raise KeyFileError(f"{where}: salt and hash must be hex") from None
    if len(salt) < 8:
        raise KeyFileError(f"{where}.salt: at least 8 bytes in hex")
    if len(digest) != 32:
        raise KeyFileError(f"{where}.hash: an HMAC-SHA256, 64 hex digits")
    scopes = raw["scopes"]
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        raise KeyFileError(f"{where}.scopes: a non-empty list of {', '.join(SCOPES)} (got {scopes!r})")
    rate, burst = raw["rate_per_s"], raw["burst"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise KeyFileError(f"{where}.rate_per_s: a number or null")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
        raise KeyFileError(f"{where}.burst: an integer or null")
    try:
        rate, burst = _check_limits(rate, burst)
    except ValueError as exc:
        raise KeyFileError(f"{where}: {exc}") from None
    created_at = raw["created_at"]
    try:
        if not isinstance(created_at, str):
            raise ValueError
        datetime.fromisoformat(created_at)
    except ValueError:
        raise KeyFileError(f"{where}.created_at: an ISO 8601 time (got {created_at!r})") from None
    return KeyRecord(name, key_id, salt, digest, frozenset(scopes), rate, burst, created_at)


@dataclass(frozen=True)
class KeyFile:
    """The file's content: its records, checked (unique names and key ids)."""

    records: tuple[KeyRecord, ...] = ()

    def __post_init__(self) -> None:
        for attribute in ("name", "key_id"):
            seen: set[str] = set()
            for record in self.records:
                value = getattr(record, attribute)
                if value in seen:
                    raise KeyFileError(f"two keys have the {attribute.replace('_', ' ')} {value!r}")
                seen.add(value)

    @classmethod
    def parse(cls, text: str | bytes, where: str = "key file") -> KeyFile:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise KeyFileError(f"{where}: not a JSON object")
        if raw.get("version") != FILE_VERSION:
            raise KeyFileError(f"{where}: version must be {FILE_VERSION} (got {raw.get('version')!r})")
        unknown = raw.keys() - {"version", "keys"}
        if unknown:
            raise KeyFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        entries = raw.get("keys")
        if not isinstance(entries, list):
            raise KeyFileError(f"{where}: `keys` must be a list")
        records = tuple(_record_of(entry, f"{where}: keys[{i}]") for i, entry in enumerate(entries))
        try:
            return cls(records)
        except KeyFileError as exc:
            raise KeyFileError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> KeyFile:
        """The file at ``path``; `KeyFileError` names what is wrong with it. A missing file is empty if ``missing_ok``."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise KeyFileError(f"{path}: no such file") from None
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.parse(data, str(path))

    def dumps(self) -> str:
        return json.dumps({"version": FILE_VERSION, "keys": [r.to_json() for r in self.records]}, indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temporary file (mode 0600) in the same folder, flushed, then renamed over ``path``."""
        path = Path(path)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(self.dumps())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with contextlib.suppress(OSError):  # the rename itself, to disk
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def get(self, name: str) -> KeyRecord | None:
        return next((r for r in self.records if r.name == name), None)

    def create(
        self, name: str, scopes: Sequence[str] = DEFAULT_SCOPES, rate_per_s: float | None = None, burst: int | None = None
    ) -> tuple[KeyFile, KeyRecord, str]:
        """A new key named ``name``: the new file content, its record and the key (shown once)."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"a key name is 1-64 letters, digits and ._- (got {name!r})")
        if self.get(name) is not None:
            raise ValueError(f"a key named {name!r} exists already (revoke it first to replace it)")
        unknown = set(scopes) - set(SCOPES)
        if not scopes or unknown:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
        rate_per_s, burst = _check_limits(rate_per_s, burst)
        key, key_id = new_key(r.key_id for r in self.records)
        salt = secrets.token_bytes(SALT_BYTES)
        created_at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        record = KeyRecord(name, key_id, salt, key_digest(salt, key), frozenset(scopes), rate_per_s, burst, created_at)
        return KeyFile((*self.records, record)), record, key

    def revoke(self, name: str) -> KeyFile:
        """The file without ``name``'s key; `ValueError` if there is none."""
        if self.get(name) is None:
            raise ValueError(f"no key named {name!r}")
        return KeyFile(tuple(r for r in self.records if r.name != name))
