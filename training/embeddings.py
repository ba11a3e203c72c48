"""Word vectors pre-trained on unlabelled text, as the network's initial embedding.

word2vec (gensim, CBOW) learns from every review, labelled or not, which words
are used alike; starting the Embedding layer there rather than at random gives
the LSTM useful vectors for words it sees only a few times with a label.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.tokenizer import PAD_ID, Tokenizer, split_words
from training.data import DataError, _decode, load_table

log = logging.getLogger(__name__)


def read_unlabeled(path: Path) -> list[str]:
    """Texts from a folder or archive of ``*.txt`` files, a ``.txt`` file (one text per line), or a table's ``text`` column."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.txt") if "test" not in f.relative_to(path).parts)
        return [_decode(file.read_bytes(), str(file)) for file in files]
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        texts = []
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    # Never the test split: even unlabelled, it must not shape the model.
                    if member.isfile() and member.name.endswith(".txt") and "/test/" not in f"/{member.name}":
                        texts.append(_decode(archive.extractfile(member).read(), f"{path}:{member.name}"))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc})") from None
        return texts
    if path.suffix == ".txt":
        return [line for line in _decode(path.read_bytes(), str(path)).splitlines() if line.strip()]
    return load_table(path).texts


class _Sentences:
    """Re-iterable token lists, so gensim can make several passes without holding copies."""

    def __init__(self, tokenized: list[list[str]]):
        self.tokenized = tokenized

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.tokenized)


def pretrain_word2vec(texts: list[str], tokenizer: Tokenizer, dim: int, epochs: int, seed: int, workers: int = 2) -> np.ndarray:
    """An embedding matrix ``[vocab_size, dim]``: word2vec vectors where known, small noise elsewhere, zeros for padding."""
    from gensim.models import Word2Vec

    log.info("pre-training %d-d word2vec vectors on %d texts (%d epochs)", dim, len(texts), epochs)
    sentences = _Sentences([split_words(text) for text in texts])
    vectors = Word2Vec(sentences, vector_size=dim, window=5, min_count=2, sg=0, epochs=epochs, workers=workers, seed=seed).wv
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 1.0, (tokenizer.vocab_size, dim)).astype("float32")
    known = [i for i, token in enumerate(tokenizer.vocabulary) if token in vectors.key_to_index]
    matrix[known] = vectors[[tokenizer.vocabulary[i] for i in known]]
    # Same scale as Keras' default uniform(-0.05, 0.05) init, so the learning rate means the same thing.
    matrix *= 0.05 / (matrix[known].std() + 1e-9) if known else 0.05
    matrix[PAD_ID] = 0.0
    log.info("word2vec covers %d of %d vocabulary entries", len(known), tokenizer.vocab_size)
    return matrix
