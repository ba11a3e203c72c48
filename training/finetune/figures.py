"""The report's figures, drawn with matplotlib (Agg: no display) and written as PNG files.

Each function takes plain numbers (the evaluation's JSON), writes one PNG and
returns its path, so the same file is linked beside the report and embedded
in it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLOURS = {"model": "#1f77b4", "baseline": "#ff7f0e", "base": "#7f7f7f"}


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def confusion(matrices: dict[str, list[list[int]]], labels: list[str], path: Path) -> Path:
    """One confusion matrix per model (rows: true label, columns: predicted), counts and row shares."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8), squeeze=False)
    for axis, (title, matrix) in zip(axes[0], matrices.items(), strict=True):
        counts = np.asarray(matrix)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            axis.text(
                j, i, f"{n}\n{shares[i, j]:.0%}", ha="center", va="center", color="white" if shares[i, j] > 0.6 else "black", fontsize=8
            )
        axis.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title)
        axis.set_xticklabels(labels, rotation=30, ha="right")
        axis.set_yticklabels(labels)
    return _save(figure, path)


def reliability(curves: dict[str, list[dict]], path: Path) -> Path:
    """Accuracy against confidence of the predicted label, per confidence bin; the diagonal is perfect calibration."""
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    lowest = min(row["low"] for rows in curves.values() for row in rows)
    axis.plot([lowest, 1], [lowest, 1], ls="--", color="black", lw=1, label="calibrated")
    for name, rows in curves.items():
        used = [r for r in rows if r["n"]]
        axis.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], marker="o", label=name, color=COLOURS.get(name))
    axis.set(xlabel="confidence (probability of the predicted label)", ylabel="accuracy", xlim=(lowest, 1), ylim=(0, 1.02))
    axis.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def by_length(rows: list[dict], path: Path) -> Path:
    """Accuracy per band of text length (tokens), for every model scored."""
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    names = [k for k in rows[0] if k not in ("band", "n")]
    width = 0.8 / len(names)
    x = np.arange(len(rows))
    for i, name in enumerate(names):
        axis.bar(x + (i - (len(names) - 1) / 2) * width, [r[name] or 0 for r in rows], width, label=name, color=COLOURS.get(name))
    axis.set_xticks(x)
    axis.set_xticklabels([f"{r['band']}\n(n={r['n']})" for r in rows], fontsize=8)
    axis.set(xlabel="tokens", ylabel="accuracy", ylim=(0, 1))
    axis.legend(fontsize=8)
    return _save(figure, path)


def per_class(scores: dict[str, dict[str, dict]], labels: list[str], path: Path) -> Path:
    """Precision, recall and F1 of each label, model beside baseline."""
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    x = np.arange(len(labels))
    width = 0.8 / len(scores)
    for axis, metric in zip(axes, ("precision", "recall", "f1"), strict=True):
        for i, (name, classes) in enumerate(scores.items()):
            values = [classes[label][metric] for label in labels]
            axis.bar(x + (i - (len(scores) - 1) / 2) * width, values, width, label=name, color=COLOURS.get(name))
        axis.set_xticks(x)
        axis.set_xticklabels(labels, rotation=20)
        axis.set(title=metric, ylim=(0, 1))
    axes[0].legend(fontsize=8)
    return _save(figure, path)


def training(history: list[dict], path: Path) -> Path:
    """Training loss and validation accuracy / macro-F1 by epoch, the kept epoch marked."""
    figure, left = plt.subplots(figsize=(6.4, 3.6))
    epochs = [h["epoch"] for h in history]
    left.plot(epochs, [h["loss"] for h in history], color="#d62728", marker=".", label="training loss")
    left.set(xlabel="epoch", ylabel="training loss")
    right = left.twinx()
    right.plot(epochs, [h["val_accuracy"] for h in history], color=COLOURS["model"], marker="o", label="validation accuracy")
    right.plot(epochs, [h["val_macro_f1"] for h in history], color="#2ca02c", marker="s", label="validation macro-F1")
    kept = [h["epoch"] for h in history if h.get("kept")]
    for epoch in kept:
        right.axvline(epoch, color="black", ls=":", lw=1)
    right.set(ylabel="validation")
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    right.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
    return _save(figure, path)
