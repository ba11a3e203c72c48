"""Small labelled data sets the tests write themselves (the real IMDB data is optional)."""

from __future__ import annotations

import csv
import json
import random
import tarfile
from pathlib import Path

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "excellent", "enjoyable", "masterpiece", "touching", "funny"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "waste", "dull", "worst", "poor", "stupid", "mess"]
FILLER = ["the", "movie", "film", "plot", "actors", "story", "was", "and", "it", "a", "scene", "director", "music", "really", "i"]
# Non-ASCII words, so that the vocabulary (and the tokenizer parity test) covers them.
FILLER += ["café", "naïve", "straße", "фильм", "映画", "ΟΔΟΣ", "İstanbul", "don't", "it’s"]


def review(rng: random.Random, positive: bool, length: int | None = None) -> str:
    words = [rng.choice(FILLER) for _ in range(length or rng.randint(8, 60))]
    for _ in range(max(2, len(words) // 6)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", "!", " <br /><br />", "..."])


def write_imdb_folder(root: Path, per_class: int = 120, seed: int = 0) -> Path:
    """``root/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for polarity in ("pos", "neg"):
            folder = root / "aclImdb" / split / polarity
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rating = rng.randint(7, 10) if polarity == "pos" else rng.randint(1, 4)
                (folder / f"{i}_{rating}.txt").write_text(review(rng, polarity == "pos"), encoding="utf-8")
    return root / "aclImdb"


def write_imdb_archive(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    folder = write_imdb_folder(root / "src", per_class, seed)
    archive = root / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    return archive


def write_table(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [{"text": review(rng, i % 2 == 0), "label": "positive" if i % 2 == 0 else "negative"} for i in range(n)]
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
