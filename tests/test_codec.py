"""The wire format between API processes and workers (`service.codec`): every encoding reads back as it was written."""

from __future__ import annotations

import pytest

from service.codec import Answer, WorkerError, decode_answer, decode_request, encode_answer, encode_request, read_answer


def as_stream_fields(fields: dict) -> dict[bytes, bytes]:
    """What Redis gives back for an entry written with ``fields``: bytes keys and values."""
    return {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in fields.items()}


def test_a_request_reads_back_as_written():
    sequences = [[1, 2, 3], [4_000_000_000], [7] * 500]
    fields = as_stream_fields(encode_request("k3y", sequences, 123, "api-7", request_id="client-9", explain=True))
    decoded = decode_request("1700000000123-0", fields)
    assert (decoded.key, decoded.deadline_ms, decoded.reply_to, decoded.request_id, decoded.explain) == (
        "k3y",
        123,
        "api-7",
        "client-9",
        True,
    )
    assert decoded.enqueued_ms == 1700000000123  # the stream entry id's time
    assert [list(s) for s in decoded.sequences] == sequences and decoded.n_texts == 3
    assert len(fields[b"t"]) == 4 * 504  # 4 bytes a token, no pickle, no JSON
    plain = decode_request("1-0", as_stream_fields(encode_request("k", [[5]], 1, "api-1")))
    assert plain.explain is False and plain.request_id == ""


def test_a_malformed_request_is_refused():
    fields = as_stream_fields(encode_request("k", [[1, 2], [3]], 1, "api-1"))
    with pytest.raises(ValueError, match="do not add up"):
        decode_request("1-0", {**fields, b"l": as_stream_fields(encode_request("k", [[1, 2, 3, 4]], 1, "a"))[b"l"]})
    with pytest.raises(KeyError):  # no reply-to: nobody could be answered
        decode_request("1-0", {k: v for k, v in fields.items() if k != b"a"})


def test_an_answer_reads_back_as_written():
    key, values = decode_answer(encode_answer("k", Answer([0.25, 0.75])))
    assert key == "k" and read_answer(values, [3, 1], explain=False) == Answer([0.25, 0.75])


def test_an_explained_answer_reads_back_as_written():
    answer = Answer([0.5, 0.875], [0.0, 1.75], [[0.5, -0.25, -0.25], [1.75]])
    _, values = decode_answer(encode_answer("k", answer))
    decoded = read_answer(values, [3, 1], explain=True)
    assert decoded.explained and decoded.probabilities == answer.probabilities and decoded.logits == answer.logits
    assert [list(row) for row in decoded.contributions] == answer.contributions
    with pytest.raises(ValueError, match="8 values for 2 sequences of 3 tokens"):
        read_answer(values, [2, 1], explain=True)  # the reader must know the lengths it was asked for


def test_an_error_reads_back_as_a_worker_error_with_its_message():
    key, outcome = decode_answer(encode_answer("0f" * 16, "token id outside the model's vocabulary | é"))
    assert key == "0f" * 16
    assert isinstance(outcome, WorkerError) and str(outcome) == "token id outside the model's vocabulary | é"
