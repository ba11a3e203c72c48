"""MODEL_CARD.md of a fine-tuned version, written from its metadata."""

from __future__ import annotations

from pathlib import Path


def _row(name: str, m: dict | None) -> str:
    if not m:
        return ""
    return f"| {name} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['log_loss']:.4f} | {m['ece']:.4f} |\n"


def write_card(path: Path, meta: dict, evaluation: dict) -> Path:
    labels, data, base, recipe = meta["labels"], meta["data"], meta["base"], meta["hyperparameters"]["recipe"]
    test, validation = evaluation["test"], evaluation["validation"]
    against_baseline, against_base = test["against_baseline"], test["against_base"]
    head = (
        "one sigmoid unit: `probability` = P(" + labels[1] + ")"
        if meta["head"]["kind"] == "sigmoid"
        else (f"{len(labels)} logits and their softmax: `probabilities` [n, {len(labels)}] in the order of `labels`")
    )
    per_class = "".join(
        f"| {label} | {c['n']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} |\n"
        for label, c in test["model"]["per_class"].items()
    )
    d = against_baseline
    base_line = (
        f"- Base model ({base['name']} v{base['version']}) on {against_base['n']} of the test texts ({against_base['note']}): "
        f"{against_base['base_accuracy']:.4f} against {against_base['model_accuracy']:.4f} for this model: {against_base['verdict']}.\n"
        if against_base.get("applicable")
        else f"- Base model: not compared ({against_base['note']}).\n"
    )
    vocabulary, timings = meta["vocabulary"], meta["timings"]
    metric_rows = _row("this model, test", test["model"]) + _row("linear baseline, test", test["baseline"])
    metric_rows += _row("this model, validation", validation["model"]) + _row("linear baseline, validation", validation["baseline"])
    card = f"""# Model card: {meta["name"]} v{meta["version"]}

A sentiment classifier fine-tuned by `python -m training.finetune` on a user's own labelled texts, from
{base["name"]} v{base["version"]} (a BiLSTM trained on movie reviews). Labels, in output order: {", ".join(f"`{x}`" for x in labels)};
head: {head}. The evaluation report is `report.html` beside this card.

## Data
- `{meta["source"]}` (SHA-256 `{data["sha256"]}`): {data["rows"]} rows; {data["duplicates_removed"]} duplicates,
  {data["conflicts_removed"]} rows giving one text two labels, {data["cross_split_removed"]} near copies across splits removed.
- Splits (stratified by label): {", ".join(f"{k} {v}" for k, v in data["splits"].items())}. Choices were made on validation;
  the test split was scored once.

## Training
- Vocabulary: the base's {vocabulary["base_size"]} words plus {vocabulary["added"]} words of the training texts seen at least
  {vocabulary["min_count"]} times, each starting from the mean of the base vectors around it.
- Recipe: new head at learning rate {recipe["learning_rate"]:g}, embedding and BiLSTM at {recipe["body_learning_rate"]:g} (Adam),
  dropout {recipe["dropout"]}, batch {recipe["batch_size"]}, embedding frozen for the first {recipe.get("freeze_embedding_epochs", 0)}
  epoch(s); targets {1 - recipe["distill"]:.0%} label, {recipe["distill"]:.0%} the linear teacher's out-of-fold probabilities;
  {"balanced class weights; " if recipe["class_weights"] else ""}early stopping on validation
  macro-F1 (patience {recipe["patience"]}); {meta["training"]["epochs_run"]} epochs run, epoch {meta["training"]["best_epoch"]} kept.
- Time: {timings["total_seconds"]:.0f} s from reading the file to writing this card ({timings["total_cpu_seconds"]:.0f} s of CPU),
  training {meta["training"]["seconds"]:.0f} s, on {timings["machine"]}.

## Metrics
| model | texts | accuracy | macro-F1 | log loss | ECE |
|---|---|---|---|---|---|
{metric_rows}
Per label (test):

| label | texts | precision | recall | F1 |
|---|---|---|---|---|
{per_class}
- Against the linear baseline ({meta["baseline"]["description"]}): accuracy {d["accuracy_difference"]["difference"]:+.4f}
  (95 % CI {d["accuracy_difference"]["low"]:+.4f} to {d["accuracy_difference"]["high"]:+.4f}), macro-F1
  {d["macro_f1_difference"]["difference"]:+.4f} ({d["macro_f1_difference"]["low"]:+.4f} to {d["macro_f1_difference"]["high"]:+.4f}).
{base_line}
## Intended use and limits
- Texts like the training data (its domain, length and language); other texts get the base model's habits at best.
- The labels are as good as the labellers': the report's worst errors show where the model and they disagree.
- Long texts are read as the movie model reads them (windows, combined by their mean logit).
- Not for decisions about people.
"""
    target = path / "MODEL_CARD.md"
    target.write_text(card, encoding="utf-8")
    return target
