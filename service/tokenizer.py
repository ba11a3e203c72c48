"""Text → token ids, in pure Python, shared by training and serving.

The same rules are rebuilt from TensorFlow string ops in the exported
SavedModel (`training/export.py`), and a test proves both give the same ids,
so whatever the model saw in training is exactly what it sees in production.

Rules, in order:

1. Lower-case (full Unicode case mapping).
2. HTML line breaks (``<br />``, ``<br>``) become spaces.
3. Apostrophes are dropped (``don't`` → ``dont``), so contractions stay one word.
4. Tokens are runs of letters and digits, plus ``!`` and ``?`` as tokens of
   their own; everything else (punctuation, emoji, symbols, marks) separates.
5. Ids: 0 is padding, 1 is out-of-vocabulary, then words by falling frequency.
6. A text with no token at all encodes as a single OOV id, so that every
   sequence has at least one step.
7. Long texts, by the version's `LongTextPolicy`:
   * ``windows``: a text longer than ``window`` tokens is cut into the fewest
     equal windows of at most ``window`` tokens, each scored as a sequence of
     its own (side by side in one batch), and the text's score combines them
     (`combine`); a text of one window is read exactly as it always was. Past
     ``max_windows`` windows, the middle of the text is cut (as below).
   * ``head_tail`` (training, and versions before windows): texts longer than
     ``max_length`` keep their first ``head_length`` tokens and their last
     ``max_length - head_length``: reviews tend to open with the premise and
     close with the verdict, so the middle is the cheapest to lose.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Literal

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"
SCHEME = "lower-br-apostrophe-alnum-bang-v1"

# The Python patterns and their RE2 twins (used by the SavedModel's
# `predict_text` signature). `[^\W_]` is "letter or digit" in Python's `re`.
BREAK_PATTERN = r"<br[ \t\n\r\f]*/?>"  # ASCII spaces: RE2 and re agree on them
APOSTROPHE_PATTERN = "['\u2019\u2018\u00b4`]"
TOKEN_PATTERN = r"[^\W_]+|[!?]"
RE2_SEPARATOR_PATTERN = r"[^\pL\pN!?]+"
RE2_BANG_PATTERN = r"([!?])"

_break = re.compile(BREAK_PATTERN)
_apostrophe = re.compile(APOSTROPHE_PATTERN)
_token = re.compile(TOKEN_PATTERN)

# The same rules for ASCII text (most reviews), eight times faster than the Unicode regex: one C-level
# translate turns every separator into a space and drops apostrophes; only texts with ! or ? need a regex.
_ASCII_SEPARATORS = str.maketrans(
    {chr(c): (None if chr(c) in "'`" else chr(c) if chr(c).isalnum() or chr(c) in "!?" else " ") for c in range(128)}
)
_ascii_token = re.compile(r"[a-z0-9]+|[!?]")
# A word starts and ends with a letter or digit and may hold apostrophes (dropped from the token): "don't" → dont.
_ascii_word = re.compile(r"[a-z0-9](?:[a-z0-9'`]*[a-z0-9])?|[!?]")
_word = re.compile(rf"[^\W_](?:(?:[^\W_]|{APOSTROPHE_PATTERN})*[^\W_])?|[!?]")

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer.json"


def split_words(text: str) -> list[str]:
    """Normalise ``text`` and cut it into tokens (rules 1–4)."""
    text = text.lower()
    if "<br" in text:
        text = _break.sub(" ", text)
    if text.isascii():
        text = text.translate(_ASCII_SEPARATORS)
        return _ascii_token.findall(text) if "!" in text or "?" in text else text.split()
    return _token.findall(_apostrophe.sub("", text))


def split_words_with_spans(text: str) -> list[tuple[str, int, int]]:
    """`split_words`, with where each token lies in ``text`` as sent: ``(token, start, end)`` character offsets.

    For explanations (a client highlights the span). When case folding keeps
    the text's length (ASCII, and nearly every other text), every offset
    survives it: line breaks become as many spaces (rule 2), then one regex
    pass finds the words with any apostrophes inside them (dropped from the
    token, rule 3). Otherwise (``İ`` → ``i̇``) each normalised
    character remembers the original one it came from (`_spans_by_character`).
    Tests check both give `split_words`' tokens, and the same spans on fuzzed text.
    """
    lowered = text.lower()  # whole, as `split_words` does: a final sigma depends on its neighbours
    if len(lowered) != len(text):
        return _spans_by_character(text, lowered)
    if "<br" in lowered:
        lowered = _break.sub(_spaces, lowered)  # as many spaces as the break had characters: offsets stay
    spans = [(m.group(), m.start(), m.end()) for m in (_ascii_word if text.isascii() else _word).finditer(lowered)]
    if _apostrophe.search(lowered) is None:
        return spans
    return [(_apostrophe.sub("", t) if len(t) > 2 and _apostrophe.search(t) else t, a, b) for t, a, b in spans]


def _spaces(match: re.Match) -> str:
    return " " * (match.end() - match.start())


def _spans_by_character(text: str, lowered_text: str) -> list[tuple[str, int, int]]:
    """`split_words_with_spans` for any text, one character at a time (slow: for case folding that changes lengths)."""
    origin = [index for index, char in enumerate(text) for _ in range(len(char.lower()))]  # same lengths, char by char
    folded = list(lowered_text)
    chars: list[str] = []
    source: list[int] = []
    position = 0
    for match in _break.finditer(lowered_text):  # rule 2: a break becomes one space
        chars.extend(folded[position : match.start()])
        source.extend(origin[position : match.start()])
        chars.append(" ")
        source.append(origin[match.start()])
        position = match.end()
    chars.extend(folded[position:])
    source.extend(origin[position:])
    kept = [(c, i) for c, i in zip(chars, source, strict=True) if not _apostrophe.fullmatch(c)]  # rule 3
    normalised = "".join(c for c, _ in kept)
    return [(m.group(), kept[m.start()][1], kept[m.end() - 1][1] + 1) for m in _token.finditer(normalised)]


@dataclass(frozen=True)
class LongTextPolicy:
    """How a text longer than the model reads at once is read (rule 7); recorded in a version's metadata."""

    kind: Literal["windows", "head_tail"] = "head_tail"
    window: int = 400
    """Longest sequence the model reads at once (``windows``)."""
    max_windows: int = 16
    """Most windows of one text; a longer text loses its middle."""
    aggregate: Literal["mean_probability", "mean_logit", "length_weighted"] = "mean_probability"
    """How the windows' probabilities make the text's."""

    def __post_init__(self) -> None:
        if self.kind not in ("windows", "head_tail") or self.window < 1 or self.max_windows < 1:
            raise ValueError(f"invalid long-text policy {self}")
        if self.aggregate not in ("mean_probability", "mean_logit", "length_weighted"):
            raise ValueError(f"unknown aggregate {self.aggregate!r}")

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> LongTextPolicy:
        return cls(**metadata) if metadata else cls()

    def as_metadata(self) -> dict:
        return {"kind": self.kind, "window": self.window, "max_windows": self.max_windows, "aggregate": self.aggregate}


@dataclass(frozen=True)
class Encoded:
    """One text as the model reads it: its windows of token ids (one, unless the text is long), whether part of
    it was not read, and its length and out-of-vocabulary count in tokens."""

    windows: list[list[int]]
    truncated: bool
    n_tokens: int
    n_oov: int = 0

    @property
    def ids(self) -> list[int]:
        """The one sequence of a text read in one window (always so under ``head_tail``)."""
        if len(self.windows) != 1:
            raise ValueError(f"this text is read in {len(self.windows)} windows")
        return self.windows[0]


def split_windows(ids: list[int], window: int) -> list[list[int]]:
    """The fewest windows of at most ``window`` ids, of equal length (±1), in order."""
    count = max(math.ceil(len(ids) / window), 1)
    size, longer = divmod(len(ids), count)
    windows, start = [], 0
    for index in range(count):
        end = start + size + (index < longer)
        windows.append(ids[start:end])
        start = end
    return windows


def combine(probabilities: Sequence[float], lengths: Sequence[int], aggregate: str) -> float:
    """One text's probability from those of its windows (`LongTextPolicy.aggregate`)."""
    if len(probabilities) == 1:
        return float(probabilities[0])
    if aggregate == "mean_probability":
        return math.fsum(probabilities) / len(probabilities)
    if aggregate == "length_weighted":
        return math.fsum(p * n for p, n in zip(probabilities, lengths, strict=True)) / sum(lengths)
    clipped = [min(max(p, 1e-7), 1 - 1e-7) for p in probabilities]  # mean_logit
    logit = math.fsum(math.log(p / (1 - p)) for p in clipped) / len(clipped)
    return 1 / (1 + math.exp(-logit))


class Tokenizer:
    """Vocabulary lookup, and how long texts are read (`LongTextPolicy`; head+tail at ``max_length`` by default)."""

    def __init__(
        self,
        vocabulary: Sequence[str],
        max_length: int = 400,
        head_length: int | None = None,
        long_texts: LongTextPolicy | None = None,
    ):
        if len(vocabulary) < 2 or vocabulary[PAD_ID] != PAD_TOKEN or vocabulary[OOV_ID] != OOV_TOKEN:
            raise ValueError(f"vocabulary must start with {PAD_TOKEN!r}, {OOV_TOKEN!r}")
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        head_length = max_length // 2 if head_length is None else head_length
        if not 0 <= head_length <= max_length:
            raise ValueError("head_length must lie between 0 and max_length")
        self.vocabulary = list(vocabulary)
        self.max_length = max_length
        self.head_length = head_length
        self.long_texts = long_texts or LongTextPolicy("head_tail", max_length)
        self._ids = {token: i for i, token in enumerate(self.vocabulary)}

    def with_policy(self, long_texts: LongTextPolicy) -> Tokenizer:
        """The same vocabulary and truncation, reading long texts by ``long_texts``."""
        other = Tokenizer.__new__(Tokenizer)
        other.__dict__.update(self.__dict__, long_texts=long_texts)
        return other

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        max_vocab: int = 30_000,
        min_count: int = 2,
        max_length: int = 400,
        head_length: int | None = None,
    ) -> Tokenizer:
        """Build the vocabulary: the ``max_vocab - 2`` most frequent tokens (ties alphabetical)."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(split_words(text))
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls([PAD_TOKEN, OOV_TOKEN, *ranked[: max_vocab - 2]], max_length, head_length)

    def encode(self, text: str) -> Encoded:
        words = split_words(text)
        ids = list(map(self._ids.get, words, repeat(OOV_ID, len(words)))) or [OOV_ID]
        n_tokens = len(ids)
        n_oov = ids.count(OOV_ID)
        policy = self.long_texts
        if policy.kind == "windows":
            if n_tokens <= policy.window:
                return Encoded([ids], False, n_tokens, n_oov)
            most = policy.window * policy.max_windows
            cut = n_tokens > most
            if cut:
                ids = ids[: most // 2] + ids[n_tokens - (most - most // 2) :]
            return Encoded(split_windows(ids, policy.window), cut, n_tokens, n_oov)
        if n_tokens <= self.max_length:
            return Encoded([ids], False, n_tokens, n_oov)
        tail = self.max_length - self.head_length
        ids = ids[: self.head_length] + (ids[-tail:] if tail else [])
        return Encoded([ids], True, n_tokens, n_oov)

    def read_positions(self, n_tokens: int) -> list[int]:
        """Which of a text's ``n_tokens`` tokens `encode` keeps, in order (its windows, concatenated, are these)."""
        policy = self.long_texts
        limit, head = (policy.window * policy.max_windows, policy.window * policy.max_windows // 2)
        if policy.kind == "head_tail":
            limit, head = self.max_length, self.head_length
        if n_tokens <= limit:
            return list(range(n_tokens))
        return [*range(head), *range(n_tokens - (limit - head), n_tokens)]

    def encode_batch(self, texts: Iterable[str]) -> list[Encoded]:
        return [self.encode(text) for text in texts]

    def config(self) -> dict:
        return {
            "scheme": SCHEME,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "head_length": self.head_length,
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "vocab_file": VOCAB_FILE,
        }

    def save(self, directory: Path) -> None:
        """Write ``vocab.txt`` (one token per line, line number = id) and ``tokenizer.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_FILE).write_text("\n".join(self.vocabulary) + "\n", encoding="utf-8")
        (directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("scheme") != SCHEME:
            raise ValueError(f"{directory / CONFIG_FILE}: tokenizer scheme {config.get('scheme')!r}, expected {SCHEME!r}")
        vocabulary = (directory / config.get("vocab_file", VOCAB_FILE)).read_text(encoding="utf-8").splitlines()
        if len(vocabulary) != config["vocab_size"]:
            raise ValueError(f"{directory}: vocabulary has {len(vocabulary)} lines, config says {config['vocab_size']}")
        return cls(vocabulary, config["max_length"], config["head_length"])
