"""A sentence-level check of a movie model: the first and the last sentence of each review, read alone.

Callers send one-line comments as well as whole reviews, and a model can gain on
whole reviews while losing on single sentences (more of its accuracy then comes
from adding up many weak cues). IMDB has no sentence labels; a review's first
and last sentences are where its author most often states the verdict ("A
waste of two hours.", "Highly recommended."), so they take the review's label.
Some do not carry it (a plot opening, a closing aside): the accuracy is below
what clean sentence labels would give, the same for every model, and read as a
comparison between models on the same crops, never as an absolute figure.
"""

from __future__ import annotations

from training.data import split_sentences

# Shorter sentences are mostly fragments ("Why?", "10/10"): too few words to judge a reader by.
MIN_WORDS = 4


def edge_sentences(texts: list[str], labels: list[int], which: str, min_words: int = MIN_WORDS) -> tuple[list[str], list[int]]:
    """The ``which`` ("first" or "last") sentence of every text of at least two sentences, with its text's label;
    sentences of fewer than ``min_words`` words are left out."""
    if which not in ("first", "last"):
        raise ValueError(f"which must be 'first' or 'last', not {which!r}")
    out_texts, out_labels = [], []
    for text, label in zip(texts, labels, strict=True):
        parts = split_sentences(text)
        if len(parts) < 2:
            continue  # a one-sentence review is no crop of anything
        sentence = parts[0] if which == "first" else parts[-1]
        if len(sentence.split()) >= min_words:
            out_texts.append(sentence)
            out_labels.append(label)
    return out_texts, out_labels
