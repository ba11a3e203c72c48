"""TensorFlow's persistent XLA compile cache for the workers: a restarted worker loads its programs instead of compiling.

A worker runs the fused serving graph under XLA, one program per batch bucket
(and as many again for explanations): compiling them takes 25-30 s on an idle
2-core machine and over a minute under load, and every worker start paid it
(a crash, an OOM kill, a rollout). TensorFlow can keep compiled programs on disk
(``--tf_xla_persistent_cache_directory``) and load them at the next start.

What keys an entry, so that no program is ever reused where it does not belong:

* **The export, the graph and the shapes**: TensorFlow names each file by the
  fingerprint of the function's signature (its name, which each export makes
  its own, and its argument types and shapes) and of the HLO module compiled,
  and compares the stored HLO with the one it would compile before it uses an
  entry. So a restart of the same version loads its programs, and any other
  export (other weights or another graph) compiles its own.
* **The TensorFlow build**, which TensorFlow's key leaves out (a program compiled
  by one XLA is not for another): each build gets a folder of its own, named by
  TensorFlow's version and the hash of its framework library.

The folder must be set before TensorFlow reads its flags (`configure`, called
by the worker before it imports TensorFlow). A ``--tf_xla_persistent_cache_directory``
already in ``TF_XLA_FLAGS`` is the operator's choice and is kept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FLAG = "--tf_xla_persistent_cache_directory"
FRAMEWORK_LIBRARY = "tensorflow/libtensorflow_framework.so"  # the RECORD entry's prefix (…so.2 on Linux)


def tensorflow_build() -> str:
    """``tf-<version>-<12 hex digits>``: TensorFlow's version and the hash of its framework library as installed,
    read from the package's RECORD (no TensorFlow import, no reading of the 160 MB library)."""
    distribution = importlib.metadata.distribution("tensorflow")
    digest = hashlib.sha256(distribution.version.encode())
    for line in (distribution.read_text("RECORD") or "").splitlines():
        if line.startswith(FRAMEWORK_LIBRARY):
            digest.update(line.encode())
    return f"tf-{distribution.version}-{digest.hexdigest()[:12]}"


def directory_for(root: Path, build: str | None = None) -> Path:
    """The folder of ``root`` for this TensorFlow build."""
    return root / (build or tensorflow_build())


def configure(root: str | None) -> Path | None:
    """Point TensorFlow's persistent compile cache at this build's folder of ``root`` (None or empty: no cache).

    Returns the folder in use (the operator's own, when ``TF_XLA_FLAGS`` already names one), or None when there
    is none: a folder that cannot be written is logged and left out, since a worker without a cache still serves.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    for flag in flags.split():
        if flag.startswith(FLAG + "="):
            return Path(flag.split("=", 1)[1])
    if not root:
        return None
    folder = directory_for(Path(root).expanduser())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        log.warning("XLA compile cache off: %s is not writable (%s); every start compiles", folder, exc)
        return None
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={folder}".strip()
    return folder


def entries(folder: Path | None) -> int:
    """How many compiled programs ``folder`` holds (0 without a cache)."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(1 for path in folder.iterdir() if path.suffix == ".pb")
