"""Labelled texts from the IMDB archive layout, CSV or JSON Lines.

Every problem with the input is raised as `DataError` naming the file (and the
line, for tables), so that a bad file never surfaces as a traceback from deep
inside TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABEL_NAMES = ("negative", "positive")
_LABELS = {
    "0": 0, "neg": 0, "negative": 0, "false": 0,
    "1": 1, "pos": 1, "positive": 1, "true": 1,
}  # fmt: skip
_IMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


class DataError(ValueError):
    """The training data cannot be used; the message names the file and line."""


@dataclass
class Dataset:
    """Texts with 0/1 labels; ``groups`` keeps related items together when splitting."""

    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def append(self, text: str, label: int, group: int) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.groups.append(group)

    def subset(self, indices: list[int]) -> Dataset:
        return Dataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], [self.groups[i] for i in indices])


def parse_label(value: object, where: str) -> int:
    key = str(value).strip().lower()
    if key not in _LABELS:
        raise DataError(f"{where}: unknown label {value!r} (use 0/1, neg/pos or negative/positive)")
    return _LABELS[key]


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # spreadsheets write a byte order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not valid UTF-8 at byte {exc.start}") from None


def _imdb_group(split: str, polarity: str, review_id: int) -> int:
    """Reviews of one movie have consecutive ids, so blocks of 100 ids approximate movies.

    Splitting validation data by these blocks keeps (nearly all) movies on one
    side, as the official train/test split does.
    """
    return (split == "test") * 1_000_000 + (polarity == "pos") * 100_000 + review_id // 100


def load_imdb(path: Path) -> dict[str, Dataset]:
    """Read ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` from a folder or a .tar.gz."""
    splits = {"train": Dataset(), "test": Dataset()}
    items: list[tuple[str, str, int, str]] = []
    if path.is_dir():
        for file in sorted(path.rglob("*.txt")):
            match = _IMDB_MEMBER.search(file.as_posix())
            if match:
                items.append((match[1], match[2], int(match[3]), _decode(file.read_bytes(), str(file))))
    else:
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    match = _IMDB_MEMBER.search(member.name)
                    if match and member.isfile():
                        raw = archive.extractfile(member).read()
                        items.append((match[1], match[2], int(match[3]), _decode(raw, f"{path}:{member.name}")))
                # tarfile stops quietly at a garbled header: read to the end so gzip/bz2/xz verify their checksum.
                while archive.fileobj.read(1 << 20):
                    pass
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc})") from None
    if not items:
        raise DataError(f"{path}: no aclImdb/{{train,test}}/{{pos,neg}}/*.txt reviews found")
    # A stable order (split, polarity, id), whatever the archive order was.
    for split, polarity, review_id, text in sorted(items, key=lambda item: item[:3]):
        splits[split].append(text, 1 if polarity == "pos" else 0, _imdb_group(split, polarity, review_id))
    return splits


def load_table(path: Path) -> Dataset:
    """Read a CSV (header row) or JSON Lines file with ``text`` and ``label`` fields.

    An optional ``group`` field keeps items with the same value on one side of
    the validation split.
    """
    raw = path.read_bytes()
    content = _decode(raw, str(path))
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        # Not str.splitlines(): JSON strings may hold raw U+2028/U+2029/U+0085, which it would split on.
        for number, line in enumerate(io.StringIO(content, newline=None), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object with text and label")
            rows.append((number, row))
    elif path.suffix.lower() in {".csv", ".tsv"}:
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        missing = {"text", "label"} - set(reader.fieldnames or [])
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file")
        if missing:
            raise DataError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} (header: {reader.fieldnames})")
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: {exc}") from None
    else:
        raise DataError(f"{path}: unknown file type (use .csv, .tsv, .jsonl or an IMDB folder/.tar.gz)")
    dataset = Dataset()
    for number, row in rows:
        where = f"{path}:{number}"
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: missing or empty 'text'")
        if label is None or label == "":
            raise DataError(f"{where}: missing 'label'")
        group = row.get("group")
        dataset.append(text, parse_label(label, where), -zlib.crc32(str(group).encode()) if group not in (None, "") else number)
    if not dataset:
        raise DataError(f"{path}: empty file (no rows)")
    return dataset


def load(path: Path) -> dict[str, Dataset]:
    """Load any supported source: ``{"train": ..., "test": ...}`` (test may be empty)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() or path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return load_imdb(path)
    return {"train": load_table(path), "test": Dataset()}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|<br\s*/?>", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """The text's sentences (split after ``.``, ``!``, ``?`` and at ``<br />``), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def sentence_crops(texts: list[str], count: int, seed: int, most_sentences: int = 3) -> list[str]:
    """``count`` runs of 1 to ``most_sentences`` consecutive sentences cut from random ``texts``.

    Callers send one-line comments as well as whole reviews; a model that only
    ever saw ~230-word reviews learns little about what a single sentence says.
    """
    rng = np.random.default_rng(seed)
    crops: list[str] = []
    while len(crops) < count and texts:
        sentences = split_sentences(texts[rng.integers(len(texts))])
        if sentences:
            n = int(rng.integers(1, most_sentences + 1))
            start = int(rng.integers(0, max(1, len(sentences) - n + 1)))
            crops.append(" ".join(sentences[start : start + n]))
    return crops
