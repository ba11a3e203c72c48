"""The wire format between API processes and inference workers: what a queued request and its answer are as bytes.

`service.queue` moves these bytes through Redis; this module alone decides
what they mean, for both ends, so that an API process and a worker cannot
disagree about a layout.

A request is one stream entry (a sequence is a text, or one window of a long one)::

    r  the request's key: 32 random hex characters the API waits on (never the client's id)
    i  the client's request id (``X-Request-ID``), only for the worker's batch log line
    a  reply-to: the name of the waiting API process's result list
    d  deadline, Unix time in milliseconds
    x  ``1``: explain (answer each token's contribution too), else ``0``
    l  token count of each sequence: little-endian uint32 array
    t  token ids of all sequences, concatenated: little-endian uint32 array

An answer is one item of a result list: ``<key>|P<float32 values>`` or
``<key>|E<UTF-8 message>`` (the worker could not score it). The values are
every sequence's outputs, in order: its probability (a two-label model), or
its k probabilities in the order of the version's labels (a k-label model);
for an explain request they go on with every sequence's logit (or k logits),
then every sequence's per-token contributions to it (to each of the k, token
by token), concatenated (`Answer`; the reader knows the sequences' lengths and
the version's k).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.packing import pack, unpack


class WorkerError(Exception):
    """The worker could not answer this request (the message is safe to show to the client)."""


@dataclass
class QueuedRequest:
    """A request as a worker sees it."""

    entry_id: str
    key: str
    deadline_ms: int
    sequences: list[array] = field(repr=False)
    reply_to: str
    request_id: str = ""
    explain: bool = False

    @property
    def enqueued_ms(self) -> int:
        """When the API queued it: the stream entry id is ``<Redis time in ms>-<n>``."""
        return int(self.entry_id.split("-", 1)[0])

    @property
    def n_texts(self) -> int:
        return len(self.sequences)

    def expired(self, now_ms: float) -> bool:
        return now_ms >= self.deadline_ms


def encode_request(
    key: str, sequences: Sequence[Sequence[int]], deadline_ms: int, reply_to: str, request_id: str = "", explain: bool = False
) -> dict[str, bytes | str | int]:
    """The fields of a request's stream entry (in the order `service.queue`'s enqueue script writes them)."""
    flat = [token for sequence in sequences for token in sequence]
    lengths = pack([len(s) for s in sequences], "I")
    return {"r": key, "i": request_id, "a": reply_to, "d": deadline_ms, "x": int(explain), "l": lengths, "t": pack(flat, "I")}


def decode_request(entry_id: str, fields: dict[bytes, bytes]) -> QueuedRequest:
    """The request of a stream entry; KeyError or ValueError for a malformed one."""
    lengths = unpack(fields[b"l"], "I")
    tokens = unpack(fields[b"t"], "I")
    if sum(lengths) != len(tokens):
        raise ValueError(f"entry {entry_id}: lengths do not add up to the token count")
    sequences, start = [], 0
    for length in lengths:
        sequences.append(tokens[start : start + length])
        start += length
    reply_to = fields[b"a"].decode()
    request_id = fields.get(b"i", b"").decode(errors="replace")
    return QueuedRequest(entry_id, fields[b"r"].decode(), int(fields[b"d"]), sequences, reply_to, request_id, fields.get(b"x") == b"1")


@dataclass
class Answer:
    """What a worker answers for one request's sequences: probabilities, and for explanations logits and weights.

    With ``classes`` k > 1 (a k-label model) every sequence has k probabilities and k logits, one after the
    other, and each token k contributions (``[token][class]``, flattened): row ``i`` of ``probabilities`` is
    ``probabilities[i * k : (i + 1) * k]``.
    """

    probabilities: list[float]
    logits: list[float] | None = None
    contributions: list[Sequence[float]] | None = None  # one row per sequence: each token's contribution to the logit(s)
    classes: int = 1

    @property
    def explained(self) -> bool:
        return self.logits is not None

    def rows(self, values: Sequence[float]) -> list[Sequence[float]]:
        """``probabilities`` or ``logits`` as one row of k values per sequence."""
        k = self.classes
        return [values[i : i + k] for i in range(0, len(values), k)]


def encode_answer(key: str, answer: Answer | str) -> bytes:
    """One item of a result list: the request's key, then the answer (`Answer`) or an error message (str)."""
    if isinstance(answer, str):
        return key.encode() + b"|E" + answer.encode()
    values = answer.probabilities
    if answer.explained:
        values = [*values, *answer.logits, *(weight for row in answer.contributions for weight in row)]
    return key.encode() + b"|P" + pack(values, "f")


def decode_answer(item: bytes) -> tuple[str, array | WorkerError]:
    """``(key, values)`` of a result item (`read_answer` makes them an `Answer`), or ``(key, WorkerError)``."""
    split = item.index(b"|")
    key, kind, body = item[:split].decode(), item[split + 1 : split + 2], item[split + 2 :]
    if kind == b"E":
        return key, WorkerError(body.decode("utf-8", "replace"))
    return key, unpack(body, "f")


def read_answer(values: Sequence[float], lengths: Sequence[int], explain: bool, classes: int = 1) -> Answer:
    """The `Answer` to a request whose sequences have ``lengths`` tokens, from a version with ``classes`` outputs per
    sequence (ValueError if the values do not fit)."""
    n, k = len(lengths) * classes, classes
    expected = n + (n + sum(lengths) * k if explain else 0)
    if len(values) != expected:
        raise ValueError(
            f"an answer of {len(values)} values for {len(lengths)} sequences of {sum(lengths)} tokens (explain: {explain}, k: {k})"
        )
    if not explain:
        return Answer(list(values), classes=k)
    contributions, start = [], 2 * n
    for length in lengths:
        contributions.append(values[start : start + length * k])
        start += length * k
    return Answer(list(values[:n]), list(values[n : 2 * n]), contributions, k)
