"""Find a model version in the store and read what the API needs, without TensorFlow.

Layout (TensorFlow Serving's): ``<store>/<name>/<version>/`` holding
``saved_model.pb``, ``variables/``, ``assets/{vocab.txt,tokenizer.json}`` and
``metadata.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from service.tokenizer import LongTextPolicy, Tokenizer


class ModelNotFound(RuntimeError):
    """No usable version of the model in the store."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path
    metadata: dict

    @property
    def threshold(self) -> float:
        return float(self.metadata.get("decision_threshold", 0.5))

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels in the order of the model's outputs: (negative, positive) for a two-label (sigmoid) model, whose
        one output is the probability of the second; k labels for a softmax model, whose outputs are k probabilities."""
        return tuple(self.metadata.get("labels") or self.metadata.get("label_names") or ("negative", "positive"))

    @property
    def classes(self) -> int:
        """Outputs per text: 1 for a two-label model (the probability of its second label), k for a k-label one."""
        head = self.metadata.get("head") or {}
        return int(head.get("classes", len(self.labels))) if head.get("kind") == "softmax" else 1

    @property
    def label_names(self) -> tuple[str, str]:
        """A two-label model's (negative, positive)."""
        negative, positive = self.labels
        return negative, positive

    @property
    def explains(self) -> bool:
        """Whether the version has a signature that splits a score over the tokens (``"explain": true``)."""
        return bool(self.metadata.get("serving", {}).get("explain_signature"))

    @property
    def long_texts(self) -> LongTextPolicy:
        """How this version reads long texts (versions before windows: head+tail at the tokenizer's length)."""
        recorded = self.metadata.get("long_texts")
        if recorded:
            return LongTextPolicy.from_metadata(recorded)
        return LongTextPolicy("head_tail", int(self.metadata.get("tokenizer", {}).get("max_length", 400)))

    def load_tokenizer(self, long_texts: LongTextPolicy | None = None) -> Tokenizer:
        """The vocabulary and truncation of ``assets/``, reading long texts by ``long_texts`` (default: the version's own)."""
        return Tokenizer.load(self.path / "assets").with_policy(long_texts or self.long_texts)


def is_complete(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() and (path / "metadata.json").is_file()


def resolve(model_dir: Path, version: int | None = None) -> ModelVersion:
    """The requested version, or the highest complete one."""
    if version is None:
        candidates = sorted((int(p.name) for p in model_dir.glob("*") if p.name.isdigit() and is_complete(p)), reverse=True)
        if not candidates:
            raise ModelNotFound(f"no model version under {model_dir} (train one with `make train`)")
        version = candidates[0]
    path = model_dir / str(version)
    if not is_complete(path):
        raise ModelNotFound(f"{path} is not a complete SavedModel export (saved_model.pb and metadata.json)")
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    return ModelVersion(model_dir.name, version, path, metadata)
