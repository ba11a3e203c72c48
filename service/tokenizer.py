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
7. Texts longer than ``max_length`` keep their first ``head_length`` tokens and
   their last ``max_length - head_length``: reviews tend to open with the
   premise and close with the verdict, so the middle is the cheapest to lose.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer.json"


def split_words(text: str) -> list[str]:
    """Normalise ``text`` and cut it into tokens (rules 1–4)."""
    text = _apostrophe.sub("", _break.sub(" ", text.lower()))
    return _token.findall(text)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text, and whether the middle had to be cut out."""

    ids: list[int]
    truncated: bool
    n_tokens: int


class Tokenizer:
    """Vocabulary lookup with the head+tail truncation policy."""

    def __init__(self, vocabulary: Sequence[str], max_length: int = 400, head_length: int | None = None):
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
        self._ids = {token: i for i, token in enumerate(self.vocabulary)}

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
        ids = [self._ids.get(token, OOV_ID) for token in split_words(text)] or [OOV_ID]
        n_tokens = len(ids)
        if n_tokens <= self.max_length:
            return Encoded(ids, False, n_tokens)
        tail = self.max_length - self.head_length
        ids = ids[: self.head_length] + (ids[-tail:] if tail else [])
        return Encoded(ids, True, n_tokens)

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
