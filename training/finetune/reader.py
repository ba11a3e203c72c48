"""A user's labelled texts, read from CSV or JSON Lines one line at a time.

The file is streamed (hashed and decoded line by line, never held whole), so a
file of millions of rows costs the memory of its texts only, and a bad byte or
row is reported by its line number. Every problem is a `DataError` naming the
file, the line and what to do; nothing is written while reading, so a bad file
leaves no trace in the model store.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.data import DataError

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
MAX_LABELS = 20
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip


@dataclass(frozen=True)
class Example:
    """One row: its text and label as written, where it came from, and the optional split and weight."""

    text: str
    label: str
    line: int
    split: str | None = None
    weight: float | None = None


@dataclass
class Table:
    """The rows of a file, its SHA-256, and how many rows it had."""

    path: Path
    examples: list[Example] = field(default_factory=list)
    sha256: str = ""
    rows: int = 0

    @property
    def labels(self) -> set[str]:
        return {e.label for e in self.examples}


@dataclass(frozen=True)
class Columns:
    """Which fields hold what (``--text-column`` and friends)."""

    text: str = "text"
    label: str = "label"
    split: str | None = None
    weight: str | None = None

    def required(self) -> list[str]:
        return [c for c in (self.text, self.label, self.split, self.weight) if c]


def _lines(path: Path, digest) -> Iterator[tuple[int, str]]:
    """``(line number, decoded line)``, hashing the raw bytes as they pass; a line that is not UTF-8 stops here."""
    with path.open("rb") as raw:
        for number, line in enumerate(raw, start=1):
            digest.update(line)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not valid UTF-8 (byte {exc.start + 1} of the line: {line[exc.start : exc.start + 4]!r}); "
                    "save the file as UTF-8"
                ) from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def read_table(path: Path, columns: Columns = Columns(), max_rows: int = 1_000_000) -> Table:
    """Every row of ``path`` (``.csv``, ``.tsv`` or JSON Lines: ``.jsonl``, ``.ndjson``, ``.json``), checked.

    Raises `DataError` for a missing file, an unknown format, a line that is not UTF-8, a missing column, an
    empty text or label, a bad split name or weight, more than ``MAX_LABELS`` distinct labels, or more than
    ``max_rows`` rows.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (give a .csv, .tsv or .jsonl file)")
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES and suffix not in JSONL_SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; use .csv, .tsv or JSON Lines (.jsonl)")
    digest = hashlib.sha256()
    table = Table(path)
    rows = _csv_rows(path, columns, digest) if suffix in CSV_SUFFIXES else _jsonl_rows(path, digest)
    labels: set[str] = set()
    for number, row in rows:
        table.rows += 1
        if table.rows > max_rows:
            raise DataError(f"{path}:{number}: more than {max_rows:,} rows; sample the file, or raise --max-rows")
        example = _example(row, number, columns, f"{path}:{number}")
        if example.label not in labels:
            labels.add(example.label)
            if len(labels) > MAX_LABELS:
                raise DataError(
                    f"{path}:{number}: a {len(labels)}th distinct label {example.label!r}; at most {MAX_LABELS} labels "
                    f"(is {columns.label!r} the label column?)"
                )
        table.examples.append(example)
    if not table.examples:
        raise DataError(f"{path}: no rows")
    table.sha256 = digest.hexdigest()
    return table


def _csv_rows(path: Path, columns: Columns, digest) -> Iterator[tuple[int, dict]]:
    numbered = _lines(path, digest)
    last_line = [0]

    def text_lines() -> Iterator[str]:
        for number, line in numbered:
            last_line[0] = number
            yield line

    reader = csv.reader(text_lines(), delimiter=CSV_SUFFIXES[path.suffix.lower()])
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (no header row)")
        header = [name.strip() for name in header]
        missing = [c for c in columns.required() if c not in header]
        if missing:
            raise DataError(
                f"{path}:1: missing column(s) {', '.join(map(repr, missing))}; the header has {header} "
                "(choose others with --text-column, --label-column, --split-column, --weight-column)"
            )
        index = {name: header.index(name) for name in columns.required()}
        start = last_line[0] + 1
        for record in reader:
            if record:  # a blank line
                yield start, {name: (record[i] if i < len(record) else None) for name, i in index.items()}
            start = last_line[0] + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{last_line[0]}: not readable as CSV ({exc})") from None


def _jsonl_rows(path: Path, digest) -> Iterator[tuple[int, dict]]:
    for number, line in _lines(path, digest):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not a JSON object ({exc.msg} at column {exc.colno}); JSON Lines has one per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with the text and the label, got {type(row).__name__}")
        yield number, row


def _example(row: dict, number: int, columns: Columns, where: str) -> Example:
    text = row.get(columns.text)
    if text is None:
        raise DataError(f"{where}: no {columns.text!r} field (the text)")
    if not isinstance(text, str):
        raise DataError(f"{where}: {columns.text!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{where}: empty text in {columns.text!r}")
    label = row.get(columns.label)
    if isinstance(label, bool):
        label = str(label).lower()
    elif isinstance(label, int | float) and not isinstance(label, bool):
        label = str(int(label)) if float(label).is_integer() else str(label)
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{where}: missing or empty label in {columns.label!r}")
    return Example(text, label.strip(), number, _split(row, columns, where), _weight(row, columns, where))


def _split(row: dict, columns: Columns, where: str) -> str | None:
    if not columns.split:
        return None
    value = row.get(columns.split)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # assigned by the splitter
    name = SPLIT_NAMES.get(str(value).strip().lower())
    if name is None:
        raise DataError(f"{where}: split {value!r} in {columns.split!r}; use train, validation or test (or leave it empty)")
    return name


def _weight(row: dict, columns: Columns, where: str) -> float | None:
    if not columns.weight:
        return None
    value = row.get(columns.weight)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # no weight given: the mean weight
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: weight {value!r} in {columns.weight!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise DataError(f"{where}: weight {value!r} in {columns.weight!r} must be a finite number >= 0")
    return weight
