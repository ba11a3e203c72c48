"""The fine-tuning flow's input: every bad file refused with its line and nothing written; splits stratified and clean."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from training.data import DataError
from training.finetune.reader import Columns, read_table
from training.finetune.splits import content_key, order_labels, prepare, text_key


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def labelled(n_per_label: int, labels=("negative", "neutral", "positive"), seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label in labels:
        for i in range(n_per_label):
            words = " ".join(rng.choice(["flight", "bag", "gate", "crew", "seat", "app", "phone", "car"]) for _ in range(5))
            rows.append({"text": f"{label} text {i} {words}", "label": label})
    rng.shuffle(rows)
    return rows


def refused(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as error:
        table = read_table(path, **kwargs)
        prepare(table)
    return str(error.value)


def test_a_good_csv_and_its_jsonl_twin_read_the_same(tmp_path):
    rows = labelled(30)
    table = read_table(write_csv(tmp_path / "data.csv", rows))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    twin = read_table(tmp_path / "data.jsonl")
    assert table.rows == twin.rows == 90 and len(table.sha256) == 64
    assert [(e.text, e.label) for e in table.examples] == [(e.text, e.label) for e in twin.examples]
    assert table.examples[0].line == 2 and twin.examples[0].line == 1  # CSV: line 1 is the header


def test_missing_columns_are_named_with_the_header(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"tweet": "hello", "sentiment": "positive"}])
    message = refused(path, "missing column")
    assert "'text'" in message and "'label'" in message and "tweet" in message and ":1:" in message
    assert len(read_table(path, Columns(text="tweet", label="sentiment")).examples) == 1
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "fine", "label": "a"}\n{"body": "x", "label": "b"}\n', encoding="utf-8")
    assert ":2:" in refused(jsonl, "no 'text' field")


def test_empty_texts_and_labels_name_their_line(tmp_path):
    rows = [*labelled(25), {"text": "   ", "label": "positive"}]
    assert f"d.csv:{len(rows) + 1}: empty text" in refused(write_csv(tmp_path / "d.csv", rows), "empty text")
    rows = [{"text": "fine", "label": "positive"}, {"text": "no label", "label": ""}]
    assert "d2.csv:3:" in refused(write_csv(tmp_path / "d2.csv", rows), "missing or empty label")


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,positive\ncaf\u00e9 cr\u00e8me,negative\n".encode("latin-1"))
    message = refused(path, "not valid UTF-8")
    assert "latin1.csv:3:" in message and "UTF-8" in message


def test_multiline_quoted_texts_keep_the_line_of_their_start(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"two\nlines",positive\n"",negative\n', encoding="utf-8")
    assert "multi.csv:4: empty text" in refused(path, "empty text")


def test_one_class_too_few_and_too_many_labels(tmp_path):
    one = write_csv(tmp_path / "one.csv", [{"text": f"text {i}", "label": "positive"} for i in range(50)])
    assert "every text is labelled 'positive'" in refused(one, "one class only")
    few = write_csv(tmp_path / "few.csv", labelled(30, ("a", "b")) + [{"text": f"rare {i}", "label": "c"} for i in range(3)])
    assert "'c': 3" in refused(few, "too few texts per class")
    many = write_csv(tmp_path / "many.csv", [{"text": f"text {i}", "label": f"l{i}"} for i in range(25)])
    assert "many.csv:22:" in refused(many, "at most 20 labels")


def test_huge_files_are_streamed_and_bounded(tmp_path):
    path = write_csv(tmp_path / "big.csv", labelled(40))
    assert "more than 100 rows" in refused(path, "raise --max-rows", max_rows=100)
    assert read_table(path, max_rows=120).rows == 120


def test_other_bad_inputs(tmp_path):
    assert "no such file" in refused(tmp_path / "absent.csv", "no such file")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    refused(tmp_path / "data.xlsx", "unknown file type")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    refused(tmp_path / "empty.csv", "empty file")
    (tmp_path / "header.csv").write_text("text,label\n", encoding="utf-8")
    refused(tmp_path / "header.csv", "no rows")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n[1, 2]\n', encoding="utf-8")
    assert "bad.jsonl:2:" in refused(tmp_path / "bad.jsonl", "expected a JSON object")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n', encoding="utf-8")
    assert "broken.jsonl:2:" in refused(tmp_path / "broken.jsonl", "not a JSON object")
    split = write_csv(tmp_path / "split.csv", [{"text": "a", "label": "x", "part": "holdout"}])
    refused(split, "split 'holdout'", columns=Columns(split="part"))
    weight = write_csv(tmp_path / "weight.csv", [{"text": "a", "label": "x", "w": "-1"}])
    refused(weight, "must be a finite number", columns=Columns(weight="w"))


def test_duplicates_are_removed_and_counted_and_conflicts_dropped(tmp_path):
    rows = labelled(40)
    rows += [dict(rows[0]), {"text": rows[1]["text"].upper() + " !", "label": rows[1]["label"]}]  # exact, and case/punctuation
    rows.append({"text": rows[2]["text"], "label": "positive" if rows[2]["label"] != "positive" else "negative"})  # a conflict
    splits = prepare(read_table(write_csv(tmp_path / "d.csv", rows)))
    assert splits.duplicates_removed == 1  # the "!" is a token: the upper-case copy with it is another text to the model
    assert splits.conflicts_removed == 2 and "line" in splits.conflict_examples[0]
    total = sum(len(p) for p in splits.parts().values())
    assert total == len(rows) - 1 - 2
    assert rows[2]["text"] not in {t for p in splits.parts().values() for t in p.texts}
    rows += [{"text": rows[i]["text"], "label": "neutral" if rows[i]["label"] != "neutral" else "positive"} for i in range(3, 20)]
    assert "check --label-column" in refused(write_csv(tmp_path / "conflicts.csv", rows), "two different labels")


def test_the_split_is_stratified_and_seeded(tmp_path):
    rows = labelled(100, ("negative", "neutral")) + labelled(50, ("positive",), seed=1)
    table = read_table(write_csv(tmp_path / "d.csv", rows))
    splits = prepare(table, validation=0.1, test=0.2, seed=3)
    for label, n in (("negative", 100), ("neutral", 100), ("positive", 50)):
        assert splits.test.counts(splits.labels)[label] == round(0.2 * n)
        assert splits.validation.counts(splits.labels)[label] == round(0.1 * n)
    again = prepare(table, validation=0.1, test=0.2, seed=3)
    assert again.test.texts == splits.test.texts
    assert prepare(table, seed=4).test.texts != splits.test.texts
    meta = splits.as_metadata(table.sha256)
    assert meta["splits"] == {"train": 175, "validation": 25, "test": 50} and meta["rows"] == 250


def test_a_given_split_column_is_kept_and_texts_shared_across_splits_are_removed(tmp_path):
    rows = [{**r, "part": "test" if i % 5 == 0 else ""} for i, r in enumerate(labelled(40))]
    shared = rows[0]["text"]  # in test; also given as training
    rows.append({"text": shared, "label": rows[0]["label"], "part": "train"})
    rows.append({"text": "RT @someone: " + rows[5]["text"] + " http://t.co/abc", "label": rows[5]["label"], "part": "train"})
    splits = prepare(read_table(write_csv(tmp_path / "d.csv", rows), Columns(split="part")))
    assert len(splits.test) == 24 and shared in splits.test.texts and shared not in splits.train.texts
    assert splits.cross_split_removed == 2  # the copy given as training, and the retweet of a test text (rows[5])
    assert splits.duplicates_removed == 0
    assert len(splits.validation) == round(0.1 * 40) * 3  # dealt out of the rows without a split


def test_keys_and_label_order():
    assert text_key("Great FLIGHT!! 😀") == text_key("great flight ! !") == "great flight ! !"
    assert content_key("RT @united: Great flight http://t.co/x1") == content_key("Great flight") == "great flight"
    assert order_labels({"positive", "negative", "neutral"}) == ["negative", "neutral", "positive"]
    assert order_labels({"10", "9", "1"}) == ["1", "9", "10"]
    assert order_labels({"spam", "ham"}, ["spam", "ham"]) == ["spam", "ham"]
    with pytest.raises(DataError, match="each of the data's labels"):
        order_labels({"spam", "ham"}, ["spam"])


def test_label_values_of_any_json_type_are_read_as_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2, "w": 0.5}) + "\n" for i in range(4)), encoding="utf-8")
    table = read_table(path, Columns(weight="w"))
    assert Counter(e.label for e in table.examples) == {"0": 2, "1": 2} and table.examples[0].weight == 0.5
