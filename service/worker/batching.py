"""How a worker turns queued requests into model calls; no Redis, no TensorFlow here.

Two steps:

1. `BatchCollector.collect` gathers requests: whatever is waiting, up to
   ``max_texts`` texts and ``max_tokens`` (texts × longest sequence), waiting at
   most ``max_wait_s`` after the first one for more. A request that does not fit
   is held over, first in line for the next batch.
2. `plan_model_calls` cuts the batch's texts into model calls padded only to
   their own longest sequence: texts sorted by length, split where the padding
   saved outweighs the cost of one more call.

Blocking reads can't do the short wait: Redis checks blocking timeouts on its
``hz`` timer (every 100 ms by default), so a 5 ms BLOCK lasts 100 ms. The wait
for *more* items therefore polls without blocking; only the wait for the
*first* item blocks (an arriving item wakes it at once).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Queued(Protocol):
    sequences: Sequence[Sequence[int]]


# fetch(max_items, block_s) -> items; block_s None means "don't wait".
Fetch = Callable[[int, float | None], list]


@dataclass
class BatchCollector:
    max_texts: int
    max_tokens: int
    max_wait_s: float
    idle_block_s: float = 1.0
    poll_interval_s: float = 0.0005
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    held_over: deque = field(default_factory=deque)

    def collect(self, fetch: Fetch) -> list:
        """One batch (possibly empty, when nothing arrived within ``idle_block_s``)."""
        batch: list = []
        texts = longest = 0

        def admit(item) -> bool:
            nonlocal texts, longest
            item_longest = max((len(s) for s in item.sequences), default=0)
            new_texts, new_longest = texts + len(item.sequences), max(longest, item_longest)
            if batch and (new_texts > self.max_texts or new_texts * new_longest > self.max_tokens):
                return False
            batch.append(item)
            texts, longest = new_texts, new_longest
            return True

        while self.held_over and admit(self.held_over[0]):
            self.held_over.popleft()
        if self.held_over:
            return batch  # the next held-over item did not fit: this batch is full
        if not batch:
            first = fetch(self.max_texts, self.idle_block_s)
            if not first:
                return batch
            self._admit_all(first, admit)
        give_up_at = self.clock() + self.max_wait_s
        while texts < self.max_texts and not self.held_over:
            more = fetch(self.max_texts - texts, None)
            if more:
                self._admit_all(more, admit)
                continue
            remaining = give_up_at - self.clock()
            if remaining <= 0:
                break
            self.sleep(min(self.poll_interval_s, remaining))
        return batch

    def _admit_all(self, items: list, admit: Callable[[object], bool]) -> None:
        for item in items:
            if self.held_over or not admit(item):
                self.held_over.append(item)


def plan_model_calls(
    lengths: Sequence[int],
    max_texts: int,
    max_tokens: int,
    step_overhead_texts: float = 0.0,
    padded_size: Callable[[int], int] | None = None,
) -> list[list[int]]:
    """Group text indices into model calls, each within both budgets, at the least estimated cost.

    An LSTM call costs about ``longest × (step_overhead_texts + texts)``: it runs
    one step per token of its longest text, and each step has a fixed cost
    (worth ``step_overhead_texts`` texts) besides the per-text work. So it pays
    to run short texts apart from long ones only while the padding saved
    outweighs the extra steps. Texts are sorted by length and cut where a
    dynamic programme over the sorted order finds the cheapest split.
    ``padded_size`` maps a call's texts to the batch the model really runs (a
    compiled graph pads to fixed batch sizes): 5 texts may cost as much as 8.
    """
    padded = padded_size or (lambda size: size)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [max(lengths[i], 1) for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[i]: cheapest plan for the i shortest texts
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = sorted_lengths[end - 1]
        for start in range(end - 1, max(end - max_texts, 0) - 1, -1):
            size = end - start
            if size > 1 and size * longest > max_tokens:
                break  # bigger calls only grow
            cost = best[start] + longest * (step_overhead_texts + padded(size))
            if cost < best[end]:
                best[end], cut[end] = cost, start
    calls: list[list[int]] = []
    end = n
    while end > 0:
        calls.append(order[cut[end] : end])
        end = cut[end]
    return calls[::-1]
