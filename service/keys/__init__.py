"""API keys: who calls, what they may do (scopes), how much (a rate per key); ``python -m service.keys`` manages them.

`service.keys.records`: the key file (salted hashes only, written atomically);
`service.keys.presented`: a request's key read from its headers, checked in
constant time against the keys in force, re-read when the file changes;
``__main__``: create, revoke, list.
"""

from service.keys.presented import ApiKeys, Presented, parse_presented
from service.keys.records import (
    DEFAULT_SCOPES,
    KEY_LENGTH,
    MAX_PRESENTED_CHARS,
    NAME_PATTERN,
    SCOPES,
    KeyFile,
    KeyFileError,
    KeyRecord,
)

__all__ = [
    "DEFAULT_SCOPES",
    "KEY_LENGTH",
    "MAX_PRESENTED_CHARS",
    "NAME_PATTERN",
    "SCOPES",
    "ApiKeys",
    "KeyFile",
    "KeyFileError",
    "KeyRecord",
    "Presented",
    "parse_presented",
]
