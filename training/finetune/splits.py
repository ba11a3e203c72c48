"""Rows → train / validation / test: duplicates and contradictions out, stratified, no text on two sides.

* **Duplicates**: two rows are the same text when the model reads them the same
  (the tokenizer's words: case, punctuation, emoji and spacing aside). Later
  copies with the same label are dropped and counted.
* **Conflicts**: a text given two different labels is dropped entirely (every
  copy), counted, and listed by line; past ``max_conflict_share`` of the texts
  the file is refused (a label column that is not the labels, or two sources
  merged badly).
* **Split**: rows without a split (``--split-column`` absent or empty) are
  dealt out per label at random (seeded): the same share of every label in
  each split, so validation and test keep the data's natural balance.
* **Near copies across splits**: a retweet or a copy with another link or
  mention (same words once ``RT``, ``@mentions`` and URLs are set aside) must
  not sit in training when it is in the test split, or the test measures
  memory. Such rows are removed from training (or validation), never from
  test, and counted.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from service.tokenizer import split_words
from training.data import DataError
from training.finetune.reader import Example, Table

SPLITS = ("train", "validation", "test")
_PRIORITY = {"test": 0, "validation": 1, "train": 2}  # which copy of a shared text stays
_NOISE = re.compile(r"https?://\S+|www\.\S+|@\w+|^\s*rt\b|\brt\s+(?=@)", re.IGNORECASE)


def text_key(text: str) -> str:
    """The text as the model reads it: two rows with the same key are one text to it."""
    words = split_words(text)
    return " ".join(words) if words else text.strip()


def content_key(text: str) -> str:
    """The words of a text without retweet marks, mentions and links ('' when nothing is left)."""
    return " ".join(split_words(_NOISE.sub(" ", text)))


def order_labels(labels: set[str], given: list[str] | None = None) -> list[str]:
    """Output order: ``given`` (it must name exactly the data's labels), else numbers by value, else alphabetical
    (which puts negative, neutral, positive in that order, and P(second label) = P(positive) for two of them)."""
    if given:
        if sorted(given) != sorted(labels) or len(set(given)) != len(given):
            raise DataError(f"--labels {given} must list each of the data's labels once: {sorted(labels)}")
        return list(given)
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


@dataclass
class Part:
    """One split: texts, label indices into `Splits.labels`, weights (None: unweighted) and source lines."""

    texts: list[str] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    weights: list[float | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, example: Example, y: int) -> None:
        self.texts.append(example.text)
        self.y.append(y)
        self.weights.append(example.weight)
        self.lines.append(example.line)

    def counts(self, labels: list[str]) -> dict[str, int]:
        counted = Counter(self.y)
        return {label: counted.get(i, 0) for i, label in enumerate(labels)}


@dataclass
class Splits:
    labels: list[str]
    train: Part
    validation: Part
    test: Part
    rows: int
    duplicates_removed: int
    conflicts_removed: int
    cross_split_removed: int
    conflict_examples: list[str]

    def parts(self) -> dict[str, Part]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def as_metadata(self, sha256: str) -> dict:
        """``metadata.json``'s ``data`` entry."""
        return {
            "sha256": sha256,
            "rows": self.rows,
            "duplicates_removed": self.duplicates_removed,
            "conflicts_removed": self.conflicts_removed,
            "cross_split_removed": self.cross_split_removed,
            "splits": {name: len(part) for name, part in self.parts().items()},
            "class_counts": {name: part.counts(self.labels) for name, part in self.parts().items()},
        }


def prepare(
    table: Table,
    labels: list[str] | None = None,
    validation: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    min_per_class: int = 20,
    max_conflict_share: float = 0.05,
) -> Splits:
    """Deduplicate, drop conflicts, split (stratified, seeded) and remove near copies across splits."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise DataError(f"validation ({validation}) and test ({test}) shares must be in (0, 1) and leave rows to train on")
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in table.examples:
        groups[text_key(example.text)].append(example)
    kept: list[Example] = []
    duplicates = conflicts = cross = 0
    conflict_examples: list[str] = []
    for copies in groups.values():
        if len({e.label for e in copies}) > 1:
            conflicts += len(copies)
            if len(conflict_examples) < 5:
                shown = ", ".join(f"line {e.line}: {e.label!r}" for e in copies[:4])
                conflict_examples.append(f"{copies[0].text[:80]!r} ({shown})")
            continue
        # One copy stays: in the split that counts most (test, then validation), else the first.
        best = min(copies, key=lambda e: _PRIORITY.get(e.split, 3))
        kept.append(best)
        for copy in copies:
            if copy is not best:  # a copy the file put in another split is a text shared between splits
                if copy.split and best.split and copy.split != best.split:
                    cross += 1
                else:
                    duplicates += 1
    if conflicts and conflicts > max_conflict_share * len(groups):
        raise DataError(
            f"{table.path}: {conflicts} rows give one text two different labels (more than {max_conflict_share:.0%} of the texts), "
            f"e.g. {conflict_examples[0]}; check --label-column"
        )
    kept.sort(key=lambda e: e.line)
    order = order_labels({e.label for e in kept}, labels) if kept else []
    _check_classes(table, kept, order, min_per_class)
    index = {label: i for i, label in enumerate(order)}
    assigned = _assign(kept, index, validation, test, seed)
    parts = {name: Part() for name in SPLITS}
    cross += _drop_near_copies(assigned)
    for example, split in assigned:
        if split is not None:
            parts[split].add(example, index[example.label])
    for name in ("train", "validation"):
        missing = [label for label, n in parts[name].counts(order).items() if n == 0]
        if missing:
            raise DataError(f"{table.path}: no {name} rows of label(s) {missing}; give more rows of them")
    return Splits(order, parts["train"], parts["validation"], parts["test"], table.rows, duplicates, conflicts, cross, conflict_examples)


def _check_classes(table: Table, kept: list[Example], order: list[str], min_per_class: int) -> None:
    counts = Counter(e.label for e in kept)
    if len(order) < 2:
        only = f"every text is labelled {order[0]!r}" if order else "no text is left"
        raise DataError(f"{table.path}: one class only ({only}); a classifier needs at least two labels")
    few = {label: counts[label] for label in order if counts[label] < min_per_class}
    if few:
        shown = ", ".join(f"{label!r}: {n}" for label, n in few.items())
        raise DataError(
            f"{table.path}: too few texts per class ({shown}, after removing duplicates and conflicts); each label needs at "
            f"least {min_per_class} (--min-per-class)"
        )


def _assign(kept: list[Example], index: dict[str, int], validation: float, test: float, seed: int) -> list[list]:
    """``[example, split]`` for every row: its own split if it has one, else dealt out per label.

    When the file gives test rows but no validation rows (or the reverse), only the missing split is dealt out
    of the rows without one, at its share of all the rows."""
    given = Counter(e.split for e in kept if e.split)
    shares = {"test": 0.0 if given["test"] else test, "validation": 0.0 if given["validation"] else validation}
    rng = np.random.default_rng(seed)
    assigned = [[e, e.split] for e in kept]
    free = [pair for pair in assigned if pair[1] is None]
    by_label: dict[int, list[list]] = defaultdict(list)
    for pair in free:
        by_label[index[pair[0].label]].append(pair)
    total = Counter(index[e.label] for e in kept)
    for label, pairs in sorted(by_label.items()):
        rng.shuffle(pairs)
        n_test = min(len(pairs), round(total[label] * shares["test"]))
        n_validation = min(len(pairs) - n_test, max(1, round(total[label] * shares["validation"])) if shares["validation"] else 0)
        for position, pair in enumerate(pairs):
            pair[1] = "test" if position < n_test else "validation" if position < n_test + n_validation else "train"
    return assigned


def _drop_near_copies(assigned: list[list]) -> int:
    """Unassign training (or validation) rows whose words, links and mentions aside, are those of a row in a
    split that counts more (test, then validation); return how many."""
    seen: dict[str, int] = {}
    for example, split in assigned:
        key = content_key(example.text)
        if key:
            seen[key] = min(seen.get(key, 3), _PRIORITY[split])
    removed = 0
    for pair in assigned:
        key = content_key(pair[0].text)
        if key and seen[key] < _PRIORITY[pair[1]]:
            pair[1] = None
            removed += 1
    return removed
