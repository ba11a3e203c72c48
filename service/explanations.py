"""A text's explanation, from the per-token weights a worker computed: each word, where it is in the text, its weight.

The worker answers, for every sequence of an explain request, its logit and
each token's contribution to it (gradient × input of the token's word vector:
`service.codec.Answer`). Here they become what a client reads: the text's
tokens in order, each with its character span in the text as sent (so a page
can highlight it) and its weight on the logit's scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import islice

from service.codec import Answer
from service.tokenizer import Encoded, Tokenizer, split_words_with_spans

METHOD = "gradient_x_input"


def explain_texts(tokenizer: Tokenizer, texts: Sequence[str], encoded: Sequence[Encoded], answer: Answer) -> list[dict]:
    """Each text's explanation. A text read in ``k`` windows has the mean of their logits as its own, so each weight
    counts ``1/k``; tokens that were not read (the middle of a text past the window bound) have none."""
    weights_read = iter(weight for row in answer.contributions for weight in row)
    explanations, sequence = [], 0
    for text, e in zip(texts, encoded, strict=True):
        k = len(e.windows)
        weights = list(islice(weights_read, sum(map(len, e.windows))))
        logit = math.fsum(answer.logits[sequence : sequence + k]) / k
        sequence += k
        spans = split_words_with_spans(text)  # none for a text without a token (read as one OOV id)
        if spans and not e.truncated:  # every token read, in order: the common case, one pass
            tokens = [
                {"token": token, "start": start, "end": end, "weight": round(weight / k, 6), "read": True}
                for (token, start, end), weight in zip(spans, weights, strict=True)
            ]
        else:
            by_position = dict(zip(tokenizer.read_positions(e.n_tokens), weights, strict=True)) if spans else {}
            tokens = []
            for position, (token, start, end) in enumerate(spans):
                weight = by_position.get(position)
                read = weight is not None
                tokens.append({"token": token, "start": start, "end": end, "weight": round(weight / k, 6) if read else None, "read": read})
        explanations.append({"method": METHOD, "logit": round(logit, 6), "tokens": tokens})
    return explanations


def explained_outputs(answer: Answer, encoded: Sequence[Encoded], outputs: Sequence[int]) -> Answer:
    """The answer as `explain_texts` reads it: for each text, the logit and the per-token weights of one output
    (``outputs[i]``: the text's label's, for a k-label version; a two-label version's one output as it is)."""
    k = answer.classes
    if k == 1:
        return answer
    logits, contributions, sequence = [], [], 0
    for e, chosen in zip(encoded, outputs, strict=True):
        for _ in e.windows:
            logits.append(answer.logits[sequence * k + chosen])
            contributions.append(answer.contributions[sequence][chosen::k])
            sequence += 1
    return Answer(answer.probabilities, logits, contributions, k)
