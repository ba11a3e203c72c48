"""How a version reads long texts: the options that choose its `LongTextPolicy`, and the comparison of policies.

The policy is a serving decision recorded in the version (``metadata.json``
``long_texts``, and the ``predict_text`` signature), chosen by measurement on
the **validation** split (`compare_policies`, ``make evaluate``), then reported
on the test split.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np

from service.tokenizer import LongTextPolicy, Tokenizer, combine

# What `make train` records unless told otherwise: chosen on the validation split (README, "Long texts").
DEFAULT_POLICY = LongTextPolicy("windows", window=400, max_windows=16, aggregate="mean_logit")

# The policies `compare_policies` measures: head+tail (what versions before windows do), windows of several
# lengths with each way of combining them, and the whole text in one sequence.
CANDIDATE_WINDOWS = (100, 150, 200, 256, 300, 400)
AGGREGATES = ("mean_probability", "mean_logit", "length_weighted")
WHOLE_TEXT = LongTextPolicy("windows", window=1_000_000, max_windows=1)


def add_long_text_arguments(parser: argparse.ArgumentParser, default: LongTextPolicy | None = DEFAULT_POLICY) -> None:
    """``--long-texts``, ``--window``, ``--max-windows``, ``--aggregate``; ``default=None``: unset unless given."""
    group = parser.add_argument_group("long texts (how the exported version reads them)")
    group.add_argument(
        "--long-texts",
        choices=("windows", "head_tail"),
        default=default and default.kind,
        help="windows: the whole text in equal windows, scored side by side and combined; head_tail: its first and last tokens.",
    )
    defaults = default or DEFAULT_POLICY
    group.add_argument("--window", type=int, default=defaults.window, help="Longest window, in tokens.")
    group.add_argument("--max-windows", type=int, default=defaults.max_windows, help="Most windows of one text (its middle is cut past).")
    group.add_argument("--aggregate", choices=AGGREGATES, default=defaults.aggregate, help="How the windows' scores are combined.")


def long_text_policy(args: argparse.Namespace) -> LongTextPolicy | None:
    """The policy the options say (None when ``--long-texts`` was left unset with ``default=None``)."""
    if args.long_texts is None:
        return None
    if args.long_texts == "head_tail":
        return LongTextPolicy("head_tail", getattr(args, "max_length", 400))
    return LongTextPolicy("windows", args.window, args.max_windows, args.aggregate)


def candidates(max_length: int, head_length: int) -> list[tuple[str, LongTextPolicy]]:
    policies = [(f"head {head_length} + tail {max_length - head_length} tokens", LongTextPolicy("head_tail", max_length))]
    for window in CANDIDATE_WINDOWS:
        for aggregate in AGGREGATES:
            policies.append((f"windows of <= {window}, {aggregate.replace('_', ' ')}", LongTextPolicy("windows", window, 64, aggregate)))
    policies.append(("the whole text in one sequence", WHOLE_TEXT))
    return policies


def score_texts(
    score: Callable[[list[list[int]]], np.ndarray], tokenizer: Tokenizer, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each text's probability as the service computes it under ``tokenizer``'s policy, and each text's windows.

    ``score`` maps sequences to probabilities (e.g. `training.pipeline.predict_sorted` over a signature)."""
    encoded = tokenizer.encode_batch(texts)
    sequences = [window for e in encoded for window in e.windows]
    p = score(sequences)
    out, start = np.zeros(len(encoded)), 0
    for i, e in enumerate(encoded):
        end = start + len(e.windows)
        out[i] = combine([float(x) for x in p[start:end]], [len(w) for w in e.windows], tokenizer.long_texts.aggregate)
        start = end
    return out, np.array([len(e.windows) for e in encoded])


def compare_policies(
    score: Callable[[list[list[int]]], np.ndarray], tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[int], long_over: int
) -> list[dict]:
    """Accuracy of every candidate policy on ``texts``, and on those longer than ``long_over`` tokens."""
    labels = np.asarray(labels)
    n_tokens = np.array([e.n_tokens for e in tokenizer.with_policy(WHOLE_TEXT).encode_batch(texts)])
    long = n_tokens > long_over
    rows = []
    for name, policy in candidates(tokenizer.max_length, tokenizer.head_length):
        p, windows = score_texts(score, tokenizer.with_policy(policy), texts)
        right = (p >= 0.5) == labels
        rows.append(
            {
                "policy": name,
                "long_texts": policy.as_metadata(),
                "accuracy": round(float(right.mean()), 4),
                f"accuracy_over_{long_over}_tokens": round(float(right[long].mean()), 4) if long.any() else None,
                "sequences_per_text": round(float(windows.mean()), 3),
            }
        )
    return rows
