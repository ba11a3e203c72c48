"""Routes that serve a fixed set of files (the demo page's, Swagger UI's) match those names and nothing else.

A ``<path:filename>`` rule matches whatever the client sends, ``../`` included,
and leaves it to each use of the name to stay inside the folder (Flask's own
automatic ``OPTIONS`` answer, or an ``after_request`` hook, never goes through
``safe_join``). Here the names are read from the folder once, at start, and the
rule only matches one of them (Werkzeug's ``any`` converter): any other name is
404 in every method, and nothing is read for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def file_names(folder: Path, exclude: Iterable[str] = ()) -> list[str]:
    """The files directly in ``folder`` (not its subfolders), sorted, but ``exclude``."""
    excluded = set(exclude)
    return sorted(path.name for path in folder.iterdir() if path.is_file() and path.name not in excluded)


def one_of(names: Iterable[str]) -> str:
    """A URL rule converter that matches exactly one of ``names``: ``any('a.css', 'b.js')``."""
    return "any(" + ", ".join(repr(name) for name in names) + ")"
