"""Fetch the official IMDB archive into a cache: resumable, checked, atomic.

A partial download is kept as ``<name>.part`` and resumed with an HTTP Range
request; the file appears under its final name only once its SHA-256 matches,
so a crash or a bad mirror never leaves a corrupt archive that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from training.data import DataError

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
DEFAULT_CACHE = Path(os.environ.get("SENTIMENT_DATA_CACHE", Path.home() / ".cache" / "sentiment"))
CHUNK = 1 << 20

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str = IMDB_URL, sha256: str = IMDB_SHA256, cache_dir: Path = DEFAULT_CACHE, timeout: float = 30.0) -> Path:
    """Return the path of the verified archive, downloading (or resuming) it if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / url.rsplit("/", 1)[-1]
    if target.exists():
        if sha256_of(target) == sha256:
            return target
        log.warning("%s does not match its SHA-256; downloading it again", target)
        target.unlink()
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status != 206:
                log.info("server ignored the Range request; starting %s from the beginning", target.name)
                offset = 0
            length = int(response.headers.get("Content-Length", 0) or 0)
            total = offset + length
            log.info("downloading %s (%s bytes, resuming at %d)", url, total or "?", offset)
            received = 0
            with part.open("r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                out.flush()
                os.fsync(out.fileno())
            # http.client returns b"" (no error) when the connection closes early: keep the .part to resume.
            if length and received < length:
                raise DataError(f"{url}: download interrupted at {offset + received} of {total} bytes; run again to resume from {part}")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is already complete (or too long): check it below
            pass
        else:
            raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DataError(f"{url}: download failed ({exc}); run again to resume from {part}") from None
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise DataError(f"{url}: SHA-256 mismatch (got {actual}, expected {sha256}); the partial file was removed")
    os.replace(part, target)
    return target
