"""Numbers and strings as bytes, one way each: the queue's arrays, KServe's binary tensors, float32 as text.

Everything is little-endian, whatever the machine (the queue's payloads cross
hosts; the binary tensor extension is little-endian by definition). ``array``
packs a whole list in C, which matters on the request path.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence

_LITTLE_ENDIAN = sys.byteorder == "little"
_FLOAT32 = struct.Struct("<f")
_LENGTH = struct.Struct("<I")


def pack(values: Iterable, typecode: str) -> bytes:
    """Little-endian array bytes (``"I"``: uint32 token ids and lengths, ``"f"``: float32 scores)."""
    packed = array(typecode, values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def unpack(raw: bytes | memoryview, typecode: str) -> array:
    """The array `pack` wrote (a ValueError if ``raw`` is not a whole number of items)."""
    values = array(typecode)
    values.frombytes(raw)
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values


def float32_json(value: float) -> float:
    """A float32 as TensorFlow Serving prints it: 6 significant digits if they read back as the same float32, else 9."""
    for digits in (6, 9):
        shortest = float(f"{value:.{digits}g}")
        if _FLOAT32.unpack(_FLOAT32.pack(shortest))[0] == value:
            return shortest
    return value


def bytes_elements(values: Sequence[str]) -> bytes:
    """A BYTES tensor of the binary extension: each element's 4-byte little-endian length, then its UTF-8 bytes."""
    return b"".join(_LENGTH.pack(len(encoded)) + encoded for encoded in (v.encode("utf-8") for v in values))


class TruncatedElement(ValueError):
    """The binary data ends inside an element (``at`` is the byte offset, ``length`` the element's, if read)."""

    def __init__(self, at: int, length: int | None):
        super().__init__(at, length)
        self.at, self.length = at, length


def read_bytes_elements(blob: memoryview) -> Iterator[bytes]:
    """The elements of a BYTES tensor written as `bytes_elements` does; `TruncatedElement` if it ends inside one."""
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise TruncatedElement(offset, None)
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise TruncatedElement(offset, length)
        yield bytes(blob[offset : offset + length])
        offset += length
