"""training.data: IMDB folders and archives, CSV/JSONL tables, and the DataError contract for bad input.

Every bad input must raise ``DataError`` naming the file (and, for tables, the line),
never a traceback from the csv/json/tarfile/zlib modules.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.synthetic import write_imdb_archive, write_imdb_folder, write_table
from training.data import DataError, Dataset, load

REPO = Path(__file__).resolve().parent.parent


def where(path: Path, line: int | None = None) -> str:
    """Regex for the ``<file>:<line>:`` (or ``<file>:``) prefix of a DataError message."""
    return "^" + re.escape(str(path)) + (f":{line}:" if line is not None else ":")


def review_files(folder: Path, split: str, polarity: str) -> list[Path]:
    """The review files of one split/polarity in id order (numeric, not lexicographic)."""
    return sorted((folder / split / polarity).glob("*.txt"), key=lambda p: int(p.name.split("_")[0]))


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --- IMDB layout ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imdb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``aclImdb`` with 120 reviews per split and polarity: ids 0-119, so two blocks of 100 ids."""
    return write_imdb_folder(tmp_path_factory.mktemp("imdb"), per_class=120)


def test_imdb_folder_counts_labels_and_order(imdb_folder: Path) -> None:
    splits = load(imdb_folder)
    assert set(splits) == {"train", "test"}
    for split in ("train", "test"):
        data = splits[split]
        assert len(data) == len(data.texts) == len(data.labels) == len(data.groups) == 240
        # neg (0) first, then pos (1), each in numeric id order (0, 1, 2, ..., 10, ... not 0, 1, 10, 100, ...).
        assert data.labels == [0] * 120 + [1] * 120
        files = review_files(imdb_folder, split, "neg") + review_files(imdb_folder, split, "pos")
        assert data.texts == [f.read_text(encoding="utf-8") for f in files]


def test_imdb_groups_are_blocks_of_100_ids_within_one_split_and_polarity(imdb_folder: Path) -> None:
    splits = load(imdb_folder)
    keys_of_group: dict[int, set[tuple[str, str, int]]] = {}
    for split in ("train", "test"):
        data = splits[split]
        files = review_files(imdb_folder, split, "neg") + review_files(imdb_folder, split, "pos")
        for file, label, group in zip(files, data.labels, data.groups, strict=True):
            polarity = file.parent.name
            assert label == (1 if polarity == "pos" else 0)
            keys_of_group.setdefault(group, set()).add((split, polarity, int(file.name.split("_")[0]) // 100))
    # Each group is exactly one (split, polarity, id block), and each such block is exactly one group.
    assert all(len(keys) == 1 for keys in keys_of_group.values()), keys_of_group
    assert len(keys_of_group) == 2 * 2 * 2  # splits x polarities x blocks {0-99, 100-119}
    train, test = splits["train"], splits["test"]
    assert not set(train.groups) & set(test.groups)
    for data in (train, test):
        neg = {g for g, label in zip(data.groups, data.labels, strict=True) if label == 0}
        pos = {g for g, label in zip(data.groups, data.labels, strict=True) if label == 1}
        assert neg and pos and not neg & pos
        # Ids 0-99 share a group, id 100 starts the next one.
        assert data.groups[0] == data.groups[99] != data.groups[100] == data.groups[119]


def test_imdb_archive_loads_like_the_folder(tmp_path: Path, imdb_folder: Path) -> None:
    archive = write_imdb_archive(tmp_path, per_class=120)
    from_archive, from_folder = load(archive), load(imdb_folder)
    for split in ("train", "test"):
        assert from_archive[split] == from_folder[split]


def test_imdb_order_does_not_depend_on_archive_member_order(tmp_path: Path) -> None:
    folder = write_imdb_folder(tmp_path / "src", per_class=15)
    files = sorted(folder.rglob("*.txt"))
    forward, backward = tmp_path / "forward.tar.gz", tmp_path / "backward.tar.gz"
    for archive, members in ((forward, files), (backward, files[::-1])):
        with tarfile.open(archive, "w:gz") as tar:
            for file in members:
                tar.add(file, arcname=f"aclImdb/{file.relative_to(folder).as_posix()}")
    assert load(forward) == load(backward) == load(folder)
    assert load(forward)["train"].labels == [0] * 15 + [1] * 15


def test_imdb_ignores_files_outside_the_labelled_layout(tmp_path: Path) -> None:
    folder = write_imdb_folder(tmp_path, per_class=3)
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled review", encoding="utf-8")
    (folder / "train" / "urls_pos.txt").write_text("http://example.com\n", encoding="utf-8")
    (folder / "README").write_text("readme", encoding="utf-8")
    (folder / "train" / "pos" / "notes.txt").write_text("not a review name", encoding="utf-8")
    splits = load(folder)
    assert len(splits["train"]) == len(splits["test"]) == 6
    assert "unlabelled review" not in splits["train"].texts


def test_imdb_partial_layout_has_an_empty_test_split(tmp_path: Path) -> None:
    folder = write_imdb_folder(tmp_path, per_class=4)
    for file in (folder / "test").rglob("*.txt"):
        file.unlink()
    splits = load(folder)
    assert len(splits["train"]) == 8
    assert splits["test"] == Dataset()


# --- CSV / JSONL tables --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_table_rows_in_file_order(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"reviews{suffix}", n=40)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    splits = load(path)
    assert splits["test"] == Dataset()
    data = splits["train"]
    assert len(data) == 40
    assert data.texts == [row["text"] for row in rows]
    assert data.labels == [1, 0] * 20  # write_table alternates positive, negative
    # Without a group column every row is its own group.
    assert len(set(data.groups)) == 40


CSV_LABELS = ["0", "1", "neg", "pos", "negative", "positive", "false", "true", " POS ", "True", "NEGATIVE"]
CSV_EXPECTED = [0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0]


def test_csv_label_spellings(tmp_path: Path) -> None:
    body = "".join(f'"review {i}",{label}\n' for i, label in enumerate(CSV_LABELS))
    data = load(write_csv(tmp_path / "labels.csv", "text,label\n" + body))["train"]
    assert data.labels == CSV_EXPECTED
    assert data.texts == [f"review {i}" for i in range(len(CSV_LABELS))]


def test_tsv_is_tab_separated(tmp_path: Path) -> None:
    data = load(write_csv(tmp_path / "labels.tsv", "label\ttext\npos\tgood, really\nneg\tbad\n"))["train"]
    assert (data.texts, data.labels) == (["good, really", "bad"], [1, 0])


def test_jsonl_label_spellings_including_json_numbers_and_booleans(tmp_path: Path) -> None:
    labels: list[object] = [0, 1, False, True, "0", "1", "neg", "pos", "negative", "positive", "false", "true", "Positive"]
    expected = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i}", "label": label}) + "\n" for i, label in enumerate(labels)), encoding="utf-8")
    assert load(path)["train"].labels == expected


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 may appear raw in JSON strings; only newlines end a JSON Lines record."""
    texts = ["one\u2028two", "three\u2029four", "five\x85six", "plain"]
    path = tmp_path / "unicode.jsonl"
    lines = [json.dumps({"text": t, "label": i % 2}, ensure_ascii=False) for i, t in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load(path)["train"].texts == texts
    # Line numbers still count newline-terminated lines only.
    path.write_text("\n".join([*lines, '{"text": "x\u2028y", "label": "maybe"}']) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=where(path, 5) + " unknown label 'maybe'"):
        load(path)


def test_crlf_line_endings(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "crlf.csv", "text,label\r\ngood,pos\r\nbad,neg\r\n")
    jsonl_path = tmp_path / "crlf.jsonl"
    jsonl_path.write_bytes(b'{"text": "good", "label": 1}\r\n{"text": "bad", "label": 0}\r\n')
    for path in (csv_path, jsonl_path):
        data = load(path)["train"]
        assert (data.texts, data.labels) == (["good", "bad"], [1, 0])


def test_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    """Spreadsheet "CSV UTF-8" exports start with a BOM; it must not hide the ``text`` column."""
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\ncafé,pos\n".encode())
    data = load(path)["train"]
    assert (data.texts, data.labels) == (["café"], [1])


def test_csv_group_column_keeps_equal_values_together(tmp_path: Path) -> None:
    rows = [
        ("a1", "pos", "movie-a"),
        ("b1", "neg", "movie-b"),
        ("a2", "neg", "movie-a"),
        ("x", "pos", ""),
        ("b2", "pos", "movie-b"),
        ("y", "neg", ""),
    ]
    body = "".join(f"{t},{label},{g}\n" for t, label, g in rows)
    data = load(write_csv(tmp_path / "groups.csv", "text,label,group\n" + body))["train"]
    g = dict(zip(data.texts, data.groups, strict=True))
    assert g["a1"] == g["a2"]
    assert g["b1"] == g["b2"]
    assert g["a1"] != g["b1"]
    # Rows without a group value are groups of their own.
    assert len({g["x"], g["y"], g["a1"], g["b1"]}) == 4


def test_jsonl_group_field_keeps_equal_values_together(tmp_path: Path) -> None:
    rows = [{"text": "a1", "label": 1, "group": 7}, {"text": "b1", "label": 0, "group": "seven"}, {"text": "a2", "label": 0, "group": 7}]
    rows += [{"text": "x", "label": 1}, {"text": "y", "label": 0, "group": None}, {"text": "b2", "label": 1, "group": "seven"}]
    path = tmp_path / "groups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = load(path)["train"]
    g = dict(zip(data.texts, data.groups, strict=True))
    assert g["a1"] == g["a2"] != g["b1"] == g["b2"]
    assert len({g["x"], g["y"], g["a1"], g["b1"]}) == 4


# --- bad input: DataError names the file and the line ------------------------------------------------

CSV_ERRORS = [
    pytest.param("review,label\nfine,pos\n", 1, r"missing column\(s\) text", id="no-text-column"),
    pytest.param("text,sentiment\nfine,pos\n", 1, r"missing column\(s\) label", id="no-label-column"),
    pytest.param("body,stars\nfine,5\n", 1, r"missing column\(s\) label, text", id="no-columns"),
    pytest.param("text,label\ngood,pos\nhmm,maybe\nbad,neg\n", 3, r"unknown label 'maybe'", id="unknown-label"),
    pytest.param("text,label\ngood,pos\n   ,neg\n", 3, r"missing or empty 'text'", id="blank-text"),
    pytest.param("text,label\n,neg\n", 2, r"missing or empty 'text'", id="empty-text"),
    pytest.param("text,label\ngood,pos\nbad,\n", 3, r"missing 'label'", id="empty-label"),
    pytest.param("text,label\ngood,pos\njust text\n", 3, r"missing 'label'", id="short-row"),
    pytest.param('text,label\n"two\nlines",pos\n\nbad,2\n', 5, r"unknown label '2'", id="line-after-multiline-record-and-blank"),
]


@pytest.mark.parametrize(("content", "line", "message"), CSV_ERRORS)
def test_bad_csv_names_file_and_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = write_csv(tmp_path / "bad.csv", content)
    with pytest.raises(DataError, match=where(path, line) + " " + message):
        load(path)


JSONL_ERRORS = [
    pytest.param('{"text": "good", "label": 1}\n{"text": "bad", \n', 2, r"invalid JSON", id="invalid-json"),
    pytest.param('\n{"text": "good", "label": 1}\n\nnot json at all\n', 4, r"invalid JSON", id="invalid-json-after-blank-lines"),
    pytest.param('{"text": "good", "label": 1}\n["bad", 0]\n', 2, r"expected a JSON object", id="array"),
    pytest.param('"just a string"\n', 1, r"expected a JSON object", id="string"),
    pytest.param('{"text": "good", "label": 1}\n{"text": "bad"}\n', 2, r"missing 'label'", id="no-label"),
    pytest.param('{"text": "good", "label": null}\n', 1, r"missing 'label'", id="null-label"),
    pytest.param('{"label": 1}\n', 1, r"missing or empty 'text'", id="no-text"),
    pytest.param('{"text": 5, "label": 1}\n', 1, r"missing or empty 'text'", id="number-text"),
    pytest.param('{"text": "ok", "label": 1}\n{"text": "hmm", "label": 2}\n', 2, r"unknown label 2", id="unknown-number-label"),
    pytest.param(
        '{"text": "ok", "label": 1}\n{"text": "x", "label": 0}\n{"text": "hmm", "label": "maybe"}\n',
        3,
        r"unknown label 'maybe'",
        id="unknown-label",
    ),
]


@pytest.mark.parametrize(("content", "line", "message"), JSONL_ERRORS)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=where(path, line) + " " + message):
        load(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("empty.csv", "", r"empty file", id="csv-empty"),
        pytest.param("header-only.csv", "text,label\n", r"empty file \(no rows\)", id="csv-header-only"),
        pytest.param("empty.jsonl", "", r"empty file \(no rows\)", id="jsonl-empty"),
        pytest.param("blank.jsonl", "\n  \n\n", r"empty file \(no rows\)", id="jsonl-blank-lines"),
    ],
)
def test_empty_table(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=where(path) + " " + message):
        load(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_undecodable_bytes_name_the_file_and_offset(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin{suffix}"
    head = b"text,label\ngood,pos\n" if suffix == ".csv" else b'{"text": "good", "label": 1}\n{"text": "'
    path.write_bytes(head + b"\xff\xfe" + b"more")
    with pytest.raises(DataError, match=where(path) + f" not valid UTF-8 at byte {len(head)}$"):
        load(path)


def test_undecodable_review_names_the_file(tmp_path: Path) -> None:
    folder = write_imdb_folder(tmp_path / "src", per_class=2)
    bad = review_files(folder, "train", "neg")[1]
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=where(bad) + " not valid UTF-8 at byte 3"):
        load(folder)
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    with pytest.raises(DataError, match=re.escape(f"{archive}:aclImdb/train/neg/{bad.name}: not valid UTF-8 at byte 3")):
        load(archive)


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An IMDB .tar.gz with the same bytes on every run (no timestamps), so corruption tests hit the same spots."""
    folder = write_imdb_folder(tmp_path_factory.mktemp("archive"), per_class=20)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(folder, arcname="aclImdb", filter=_reproducible)
    return buffer.getvalue()


def test_not_a_tar_archive(tmp_path: Path) -> None:
    path = tmp_path / "data.tar.gz"
    path.write_bytes(b"this is not an archive\n" * 10)
    with pytest.raises(DataError, match=where(path) + " not a readable tar archive"):
        load(path)


def test_truncated_archive(tmp_path: Path, archive_bytes: bytes) -> None:
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(archive_bytes[: len(archive_bytes) // 2])
    with pytest.raises(DataError, match=where(path) + " not a readable tar archive"):
        load(path)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.3, 0.35, 0.5, 0.65, 0.8, 0.95])
def test_corrupt_archive_is_an_error_not_a_partial_dataset(tmp_path: Path, archive_bytes: bytes, fraction: float) -> None:
    """A flipped byte in the compressed stream must not load silently (fewer or garbled reviews) or raise zlib.error."""
    data = bytearray(archive_bytes)
    data[int(len(data) * fraction)] ^= 0xFF
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=where(path)):  # unreadable archive, or a garbled review that is not UTF-8
        load(path)


def test_archive_fixture_is_reproducible_and_loads(tmp_path: Path, archive_bytes: bytes) -> None:
    path = tmp_path / "good.tar.gz"
    path.write_bytes(archive_bytes)
    splits = load(path)
    assert len(splits["train"]) == len(splits["test"]) == 40


def test_tar_without_reviews(tmp_path: Path) -> None:
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("aclImdb/README")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"readme"))
    with pytest.raises(DataError, match=where(path) + r" no aclImdb/\{train,test\}/\{pos,neg\}/\*\.txt reviews found"):
        load(path)


def test_folder_without_reviews(tmp_path: Path) -> None:
    folder = tmp_path / "aclImdb"
    (folder / "train" / "pos").mkdir(parents=True)
    (folder / "train" / "pos" / "review.txt").write_text("no id_rating name", encoding="utf-8")
    with pytest.raises(DataError, match=where(folder) + " no aclImdb/.* reviews found"):
        load(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=where(empty) + " no aclImdb/.* reviews found"):
        load(empty)


def test_missing_path(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.csv", tmp_path / "nope.tar.gz", tmp_path / "nope"):
        with pytest.raises(DataError, match=where(path) + " no such file or folder"):
            load(path)


@pytest.mark.parametrize("name", ["reviews.txt", "reviews.parquet", "reviews"])
def test_unknown_file_type(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("text,label\ngood,pos\n", encoding="utf-8")
    with pytest.raises(DataError, match=where(path) + " unknown file type"):
        load(path)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


# --- the training CLI turns DataError into a one-line message and exit code 2 -----------------------


def test_cli_reports_bad_data_without_traceback(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", "text,label\ngood,pos\nhmm,maybe\n")
    out = tmp_path / "store"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "training", "--data", str(bad), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.match(r"error: " + re.escape(str(bad)) + r":3: unknown label 'maybe' \(", errors[0]), errors[0]
    assert not out.exists()


def test_sentence_crops_are_runs_of_consecutive_whole_sentences() -> None:
    from training.data import sentence_crops

    texts = ["One. Two! Three? Four.<br /><br />Five.", "Alone"]
    sentences = ["One.", "Two!", "Three?", "Four.", "Five."]
    crops = sentence_crops(texts, 200, seed=3)
    assert len(crops) == 200 and crops == sentence_crops(texts, 200, seed=3)
    for crop in crops:
        if crop == "Alone":
            continue
        parts = crop.split(" ")
        assert 1 <= len(parts) <= 3, crop
        start = sentences.index(parts[0])
        assert parts == sentences[start : start + len(parts)], crop
    assert {"Alone", "Five.", "One. Two! Three?"} <= set(crops)


def test_edge_sentences_take_the_first_or_last_sentence_of_reviews_of_two_or_more() -> None:
    from training.sentences import edge_sentences

    texts = ["A fine film with heart. The middle drags. Highly recommended to everyone.", "One sentence only, long enough.",
             "Awful from the start to the end.<br /><br />Why?", "Plot first of all here! Then the verdict: dull and slow."]  # fmt: skip
    labels = [1, 1, 0, 0]
    assert edge_sentences(texts, labels, "first") == (
        ["A fine film with heart.", "Awful from the start to the end.", "Plot first of all here!"],
        [1, 0, 0],
    )
    # "Why?" is too short to judge by; a one-sentence review is no crop.
    assert edge_sentences(texts, labels, "last") == (["Highly recommended to everyone.", "Then the verdict: dull and slow."], [1, 0])
    with pytest.raises(ValueError):
        edge_sentences(texts, labels, "middle")
