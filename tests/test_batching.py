"""Batch forming, without Redis: a scripted arrival schedule and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from service.worker.batching import BatchCollector, plan_model_calls


@dataclass
class Item:
    name: str
    sequences: list[list[int]]


def item(name: str, texts: int = 1, length: int = 10) -> Item:
    return Item(name, [[1] * length for _ in range(texts)])


class Arrivals:
    """`fetch` over items that arrive at given times; the clock moves only when the collector sleeps."""

    def __init__(self, schedule: list[tuple[float, Item]]):
        self.schedule = sorted(schedule, key=lambda s: s[0])
        self.now = 0.0
        self.calls: list[tuple[int, float | None]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def fetch(self, max_items: int, block_s: float | None) -> list[Item]:
        self.calls.append((max_items, block_s))
        if block_s and not any(t <= self.now for t, _ in self.schedule) and self.schedule:
            self.now = max(self.now, min(self.schedule[0][0], self.now + block_s))
        ready = [entry for entry in self.schedule if entry[0] <= self.now][:max_items]
        for entry in ready:
            self.schedule.remove(entry)
        return [i for _, i in ready]

    def collector(self, **kw) -> BatchCollector:
        defaults = {"max_texts": 8, "max_tokens": 10_000, "max_wait_s": 0.005, "idle_block_s": 1.0}
        return BatchCollector(**{**defaults, **kw}, clock=self.clock, sleep=self.sleep)


def names(batch) -> list[str]:
    return [i.name for i in batch]


def test_takes_everything_waiting_up_to_the_size_limit():
    arrivals = Arrivals([(0.0, item(str(i))) for i in range(12)])
    collector = arrivals.collector()
    assert names(collector.collect(arrivals.fetch)) == [str(i) for i in range(8)]
    assert names(collector.collect(arrivals.fetch)) == [str(i) for i in range(8, 12)]


def test_waits_at_most_max_wait_after_the_first_item():
    arrivals = Arrivals([(0.0, item("a")), (0.003, item("b")), (0.020, item("late"))])
    collector = arrivals.collector()
    batch = collector.collect(arrivals.fetch)
    assert names(batch) == ["a", "b"]
    assert 0.005 <= arrivals.now < 0.0061  # gave up at the deadline, not at the next arrival
    assert names(collector.collect(arrivals.fetch)) == ["late"]


def test_a_full_batch_goes_without_waiting():
    arrivals = Arrivals([(0.0, item("a", texts=8)), (0.004, item("b"))])
    collector = arrivals.collector()
    assert names(collector.collect(arrivals.fetch)) == ["a"]
    assert arrivals.now == 0.0


def test_idle_returns_empty_after_blocking_once():
    arrivals = Arrivals([])
    assert arrivals.collector().collect(arrivals.fetch) == []
    assert arrivals.calls == [(8, 1.0)]


def test_only_the_first_wait_blocks_later_ones_poll():
    arrivals = Arrivals([(0.5, item("a")), (0.502, item("b"))])
    collector = arrivals.collector()
    assert names(collector.collect(arrivals.fetch)) == ["a", "b"]
    assert arrivals.calls[0][1] == 1.0 and all(block is None for _, block in arrivals.calls[1:])


def test_token_budget_holds_over_what_does_not_fit():
    # Budget 100 tokens: two texts of 40 fit (2 x 40), a third of 40 would make 3 x 40.
    arrivals = Arrivals([(0.0, item("a", length=40)), (0.0, item("b", length=40)), (0.0, item("c", length=40))])
    collector = arrivals.collector(max_tokens=100)
    assert names(collector.collect(arrivals.fetch)) == ["a", "b"]
    assert names(collector.held_over) == ["c"]
    assert names(collector.collect(arrivals.fetch)) == ["c"]


def test_padding_counts_in_the_budget():
    # One long text makes every text of the batch cost its length.
    arrivals = Arrivals([(0.0, item("short", texts=3, length=5)), (0.0, item("long", length=30))])
    assert names(arrivals.collector(max_tokens=100).collect(arrivals.fetch)) == ["short"]


def test_held_over_items_go_first_and_keep_their_order():
    arrivals = Arrivals([(0.0, item(n, texts=3)) for n in "abcd"] + [(0.001, item("e"))])
    collector = arrivals.collector(max_texts=6)
    assert names(collector.collect(arrivals.fetch)) == ["a", "b"]
    assert names(collector.collect(arrivals.fetch)) == ["c", "d"]
    assert names(collector.collect(arrivals.fetch)) == ["e"]


def test_an_oversized_request_still_forms_a_batch_alone():
    arrivals = Arrivals([(0.0, item("huge", texts=20, length=50))])
    assert names(arrivals.collector(max_texts=8, max_tokens=100).collect(arrivals.fetch)) == ["huge"]


def test_model_calls_stay_within_budgets():
    lengths = [5, 400, 7, 6, 390, 8]
    calls = plan_model_calls(lengths, max_texts=4, max_tokens=1000, step_overhead_texts=50)
    assert sorted(i for call in calls for i in call) == list(range(6))
    for call in calls:
        assert len(call) <= 4 and len(call) * max(lengths[i] for i in call) <= 1000
    assert calls == [[0, 3, 2, 5], [4, 1]]  # the short ones together, shortest first
    assert plan_model_calls([3, 2, 1], max_texts=10, max_tokens=1, step_overhead_texts=50) == [[2], [1], [0]]  # one always fits


def cost(lengths, calls, overhead):
    return sum(max(lengths[i] for i in call) * (overhead + len(call)) for call in calls)


def test_short_texts_run_apart_from_long_ones_when_it_pays():
    lengths = [10] * 60 + [400] * 4
    split = plan_model_calls(lengths, max_texts=128, max_tokens=10**6, step_overhead_texts=20)
    assert sorted(map(len, split)) == [4, 60]  # 10 x 80 + 400 x 24, not 400 x 84
    assert cost(lengths, split, 20) == 10 * 80 + 400 * 24


def test_a_high_step_cost_keeps_one_call():
    """On a GPU a step's fixed cost dwarfs the per-text work: one call, however ragged."""
    lengths = [10] * 60 + [400] * 4
    assert len(plan_model_calls(lengths, max_texts=128, max_tokens=10**6, step_overhead_texts=10_000)) == 1


def test_plan_is_never_worse_than_one_call_or_sorted_halves():
    import random

    rng = random.Random(3)
    for _ in range(50):
        lengths = [min(rng.randint(5, 900), 400) for _ in range(rng.randint(1, 128))]
        plan = plan_model_calls(lengths, max_texts=128, max_tokens=10**6, step_overhead_texts=26)
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        half = len(order) // 2
        alternatives = [[order], [order[:half], order[half:]] if half else [order]]
        assert cost(lengths, plan, 26) <= min(cost(lengths, alt, 26) for alt in alternatives) + 1e-9


def test_the_plan_counts_the_batch_the_model_really_runs():
    """A compiled graph pads 5 texts to 8: a call of the 5 long texts would cost as much as 8 of them."""
    lengths = [100] * 5 + [10] * 3
    assert len(plan_model_calls(lengths, max_texts=128, max_tokens=10**6, step_overhead_texts=2)) == 2  # exact sizes: split pays

    def bucket(size: int) -> int:
        return next(b for b in (1, 2, 4, 8, 16) if b >= size)

    calls = plan_model_calls(lengths, max_texts=128, max_tokens=10**6, step_overhead_texts=2, padded_size=bucket)
    assert sorted(len(c) for c in calls) == [1, 3, 4]  # 4 + 1 long ones (no padding), the 3 short ones padded to 4
    assert sorted(i for c in calls for i in c) == list(range(8))
