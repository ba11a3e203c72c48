"""``report.html``: what the fine-tuned model is worth on the user's own held-out texts, in one self-contained page.

Sections: data, headline metrics (test and validation) beside the linear
baseline and the base model, the differences with 95 % intervals, per-label
precision / recall / F1, confusion matrices, reliability, accuracy by text
length, training, the 20 worst test errors with each word's weight for the
predicted label, and a verdict. Figures are PNG files beside the page and
embedded in it as base64 (no external assets: the page can be mailed).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from training.finetune import figures

PNG_FILES = ("confusion.png", "reliability.png", "length.png", "per_class.png", "training.png")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.text,th.text{text-align:left;max-width:640px}img{max-width:100%}
.verdict{font-size:1.15em;padding:.8em 1em;border-radius:6px;background:#eef6ee;border:1px solid #9c9}
.verdict.no{background:#fbeeee;border-color:#c99}.muted{color:#777;font-size:.9em}
.w{border-radius:3px;padding:0 1px}
"""


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></p>'


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _signed(d: dict) -> str:
    return f"{d['difference']:+.4f} (95 % CI {d['low']:+.4f} to {d['high']:+.4f})"


def _metrics_table(rows: dict[str, dict | None]) -> str:
    body = ""
    for name, m in rows.items():
        if m:
            body += (
                f"<tr><th class=text>{html.escape(name)}</th><td>{m['n']}</td><td>{_pct(m['accuracy'])}</td><td>{_pct(m['macro_f1'])}</td>"
            )
            body += f"<td>{_pct(m.get('log_loss'))}</td><td>{_pct(m.get('ece'))}</td></tr>"
    return (
        f"<table><tr><th class=text></th><th>texts</th><th>accuracy</th><th>macro-F1</th><th>log loss</th><th>ECE</th></tr>{body}</table>"
    )


def _per_class_table(reports: dict[str, dict], labels: list[str]) -> str:
    head = "".join(f"<th>{html.escape(n)} P</th><th>R</th><th>F1</th>" for n in reports)
    body = ""
    for label in labels:
        cells = "".join(f"<td>{r['per_class'][label]['precision']:.3f}</td><td>{r['per_class'][label]['recall']:.3f}</td>"
                        f"<td>{r['per_class'][label]['f1']:.3f}</td>" for r in reports.values())  # fmt: skip
        n = next(iter(reports.values()))["per_class"][label]["n"]
        body += f"<tr><th class=text>{html.escape(label)}</th><td>{n}</td>{cells}</tr>"
    return f"<table><tr><th class=text>label</th><th>texts</th>{head}</tr>{body}</table>"


def _highlighted(error: dict) -> str:
    """The text with each read word shaded by its weight for the predicted label (red: for it, blue: against)."""
    text, words = error["text"], error.get("words") or []
    if not words:
        return html.escape(text)
    scale = max(abs(w["weight"]) for w in words) or 1.0
    out, position = [], 0
    for w in sorted(words, key=lambda w: w["start"]):
        if w["start"] < position:
            continue
        strength = min(abs(w["weight"]) / scale, 1.0)
        colour = f"rgba(214,39,40,{strength:.2f})" if w["weight"] > 0 else f"rgba(31,119,180,{strength:.2f})"
        out.append(html.escape(text[position : w["start"]]))
        title = f"{w['weight']:+.3f}"
        out.append(f'<span class=w style="background:{colour}" title="{title}">{html.escape(text[w["start"] : w["end"]])}</span>')
        position = w["end"]
    out.append(html.escape(text[position:]))
    return "".join(out)


def _errors_table(errors: list[dict]) -> str:
    rows = ""
    for rank, e in enumerate(errors, start=1):
        top = ", ".join(f"{html.escape(w['token'])} {w['weight']:+.2f}" for w in e.get("top_words", []))
        rows += (
            f"<tr><td>{rank}</td><td class=text>{_highlighted(e)}<div class=muted>line {e['line']}; strongest: {top}</div></td>"
            f"<td class=text>{html.escape(e['label'])}</td><td class=text>{html.escape(e['predicted'])} ({e['confidence']:.2f})</td>"
            f"<td>{e['p_true']:.2f}</td></tr>"
        )
    head = "<tr><th>#</th><th class=text>text (shaded by weight for the predicted label)</th><th class=text>true</th>"
    return f"<table>{head}<th class=text>predicted (probability)</th><th>P(true)</th></tr>{rows}</table>"


def draw_figures(evaluation: dict, labels: list[str], history: list[dict], folder: Path) -> dict[str, Path]:
    """Every PNG of the report, written into ``folder``."""
    test = evaluation["test"]
    matrices = {"model": test["model"]["confusion"], "linear baseline": test["baseline"]["confusion"]}
    curves = {"model": test["model_reliability"], "baseline": test["baseline_reliability"]}
    per_class = {"model": test["model"]["per_class"], "baseline": test["baseline"]["per_class"]}
    return {
        "confusion": figures.confusion(matrices, labels, folder / "confusion.png"),
        "reliability": figures.reliability(curves, folder / "reliability.png"),
        "length": figures.by_length(test["by_length"], folder / "length.png"),
        "per_class": figures.per_class(per_class, labels, folder / "per_class.png"),
        "training": figures.training(history, folder / "training.png"),
    }


def write_report(folder: Path, meta: dict, evaluation: dict, errors: list[dict]) -> Path:
    """``report.html`` and its PNGs in ``folder`` (the version being written)."""
    labels, data, test = meta["labels"], meta["data"], evaluation["test"]
    png = draw_figures(evaluation, labels, meta["training"]["history"], folder)
    against_baseline, against_base = test["against_baseline"], test["against_base"]
    better = against_base.get("verdict", "").startswith("better")
    base = f"{meta['base']['name']} v{meta['base']['version']}"
    if against_base.get("applicable"):
        base_text = (
            f"On {against_base['n']} test texts ({html.escape(against_base['note'])}) the base model is right on "
            f"{against_base['base_accuracy']:.1%}, this model on {against_base['model_accuracy']:.1%} "
            f"({against_base['model_accuracy_between_the_two']:.1%} when it too may only choose between those two labels). "
            f"Difference: {_signed(against_base['accuracy_difference'])}."
        )
        verdict = f"<b>{'Better' if better else 'Not better'} than the base model ({base}) on this data</b>: {against_base['verdict']}."
    else:
        base_text = f"Not compared: {html.escape(against_base['note'])}."
        verdict = f"<b>Not compared with the base model ({base})</b>: {html.escape(against_base['note'])}."
    target = "met" if against_baseline["target_met"] else "<b>not met</b>"
    rows = {
        f"this model ({meta['name']} v{meta['version']})": test["model"],
        "linear baseline": test["baseline"],
        f"base model {base}" + (" (its two labels only)" if len(labels) > 2 else ""): test.get("base"),
    }
    validation = evaluation["validation"]
    title = f"{html.escape(meta['name'])} v{meta['version']}: evaluation"
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(meta["name"])} v{meta["version"]}: evaluation report</h1>
<p>Fine-tuned from <b>{base}</b> on <code>{html.escape(str(meta["source"]))}</code> (SHA-256 <code>{data["sha256"][:16]}…</code>).
Labels, in output order: {", ".join(f"<b>{html.escape(x)}</b>" for x in labels)} ({meta["head"]["kind"]} head).</p>

<h2>Data</h2>
<p>{data["rows"]} rows read; {data["duplicates_removed"]} duplicates, {data["conflicts_removed"]} rows giving one text two labels and
{data["cross_split_removed"]} near copies of a text in another split removed. Splits (stratified by label, seed
{meta["hyperparameters"]["seed"]}): {", ".join(f"{k} {v}" for k, v in data["splits"].items())}. Every choice (epochs, the
baseline's C) was made on the validation split; the test split was scored once, at the end.</p>

<h2>Test split</h2>
{_metrics_table(rows)}
<p>Against the linear baseline ({html.escape(meta["baseline"]["description"])}, trained by this command on the same training split):
accuracy {_signed(against_baseline["accuracy_difference"])}, macro-F1 {_signed(against_baseline["macro_f1_difference"])}.
Target (+{against_baseline["target"]:.0%} in both): {target}.</p>
<p>{base_text}</p>
<p class=muted>Intervals: paired bootstrap over the test texts ({against_baseline["accuracy_difference"]["rounds"]} resamples), 95 %.
ECE: expected calibration error of the predicted label's probability.</p>
<h3>Validation split</h3>
{_metrics_table({"this model": validation["model"], "linear baseline": validation["baseline"]})}

<h2>Per label</h2>
{_per_class_table({"model": test["model"], "baseline": test["baseline"]}, labels)}
{_png(png["per_class"])}
<h2>Confusion matrices</h2>
{_png(png["confusion"])}
<h2>Reliability</h2>
<p>Accuracy against the probability of the predicted label, in bins; on the diagonal a probability means what it says.</p>
{_png(png["reliability"])}
<h2>Accuracy by text length</h2>
{_png(png["length"])}
<h2>Training</h2>
<p>{html.escape(meta["training"]["summary"])}</p>
{_png(png["training"])}
<h2>The 20 worst errors</h2>
<p>Test texts the model got wrong with the least probability on the true label. Each word read is shaded by its
gradient × input for the predicted label's logit (red: pushed towards it, blue: away), from the exported
<code>explain</code> signature.</p>
{_errors_table(errors)}

<h2>Verdict</h2>
<p class="verdict{"" if better else " no"}">{verdict} Against the linear baseline: {html.escape(against_baseline["verdict"])}
(target {target}).</p>
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
