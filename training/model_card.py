"""MODEL_CARD.md for an exported version, written from its metadata."""

from __future__ import annotations

from pathlib import Path

BASELINE = "baseline: TF-IDF bigrams + logistic regression, test"
TEACHER = "teacher: NB-weighted TF-IDF 1-3-grams + logistic regression, test"

# Short texts outside the training data's style (one sentence; products as well as films), scored into the card
# at export so that every version shows how it does on them.
PROBES = (
    ("I loved this movie.", "positive"),
    ("Terrible film, a complete waste of time.", "negative"),
    ("Not bad at all.", "positive"),
    ("Not good.", "negative"),
    ("Two hours I will never get back.", "negative"),
    ("I expected more from this director.", "negative"),
    ("Works perfectly, highly recommend.", "positive"),
    ("Broke after two days, do not buy.", "negative"),
    ("The battery died within a week.", "negative"),
    ("Arrived on time and does exactly what it says.", "positive"),
)


def _row(name: str, m: dict | None) -> str:
    if not m:
        return ""
    cells = [m.get(k) for k in ("n", "accuracy", "roc_auc", "f1", "ece", "log_loss")]
    return f"| {name} | " + " | ".join("" if c is None else str(c) for c in cells) + " |\n"


def _probes(probes: list[dict]) -> str:
    if not probes:
        return ""
    rows = ""
    for p in probes:
        right = (p["score"] >= 0.5) == (p["expected"] == "positive")
        rows += f"| {p['text']} | {p['expected']} | {p['score']:.3f} | {'yes' if right else '**no**'} |\n"
    return f"""
Short texts unlike the training reviews, scored by this version at export:

| text | expected | score | right |
|---|---|---|---|
{rows}"""


def _serving(meta: dict) -> str:
    """How the exported version reads long texts, which graphs it serves, and how it explains a score."""
    long_texts = meta.get("long_texts") or {"kind": "head_tail"}
    if long_texts["kind"] == "windows":
        cut = long_texts["window"] * long_texts["max_windows"]
        how = (
            f"a text longer than {long_texts['window']} tokens is read whole, in the fewest equal windows of at most "
            f"{long_texts['window']} tokens, scored side by side; the text's score combines them "
            f"({long_texts['aggregate'].replace('_', ' ')}). Past {long_texts['max_windows']} windows ({cut} tokens) the "
            f"middle is cut (the first {cut // 2} and the last {cut - cut // 2} tokens are read)."
        )
    else:
        how = "long texts are read by their first and last tokens, as in training."
    graphs = ""
    if meta.get("serving", {}).get("graph") == "fused-xla":
        graphs = (
            "\nSignatures: `serving_default` (token ids → probability: the BiLSTM as one fused loop, XLA-compiled, for\n"
            "CPUs), `serving_gpu` (the same through cuDNN), `predict_text` (raw text, long-text policy included),\n"
            "`explain` (token ids → probability, logit and each token's gradient × input).\n"
        )
    return f"\n## Serving\nLong texts: {how}\n{graphs}"


def _recipe_extras(meta: dict) -> str:
    """The recipe's optional steps, in words (nothing for a version trained without them)."""
    hp, parts = meta["hyperparameters"], []
    if hp.get("lm_epochs"):
        parts.append(
            f"the embedding and both LSTMs pre-trained as language models (next and previous word, {hp['lm_epochs']} epoch(s)) "
            "on the training and unlabelled reviews"
        )
    if hp.get("teacher_model"):
        versions = ", ".join(map(str, hp["teacher_model"]))
        parts.append(f"the linear teacher's logits averaged with those of the exported version(s) {versions} for the distillation targets")
    if hp.get("adversarial") or hp.get("virtual_adversarial"):
        parts.append(
            f"adversarial (weight {hp.get('adversarial', 0)}) and virtual adversarial (weight {hp.get('virtual_adversarial', 0)}) "
            f"losses, word vectors moved {hp.get('epsilon')} root-mean-square word-vector norms per text"
        )
    if meta.get("temperature", 1.0) != 1.0:
        parts.append(f"the logit divided by {meta['temperature']} (temperature fitted on the validation split), in the output layer")
    return "\nAlso: " + "; ".join(parts) + "." if parts else ""


def write_model_card(path: Path, meta: dict) -> Path:
    arch, tok, ds, ev = meta["architecture"], meta["tokenizer"], meta["dataset"], meta["metrics"]
    hp = meta["hyperparameters"]
    layers = f"BiLSTM({arch['lstm_units']} per direction)" if arch["bidirectional"] else f"LSTM({arch['lstm_units']})"
    pooling = "masked mean over time steps" if arch.get("pooling") == "mean" else "final state"
    extra = f" and {ds['unlabeled']}" if ds.get("unlabeled") else ""
    decay = ", cosine decay to a tenth" if hp.get("cosine_decay") else ""
    distilled = ""
    if ds.get("distilled") or ds.get("crops"):
        distilled = (
            f"\n- Distillation: {ds['distilled']} unlabelled reviews and {ds.get('crops', 0)} runs of 1 to 3 sentences cut from them,\n"
            "  each with the probability given by a linear teacher (TF-IDF word 1-3-grams scaled by naive Bayes ratios +\n"
            "  logistic regression, fitted on the same training texts) as a soft target, beside the labelled reviews: more,\n"
            f"  and smoother, supervision than the {ds['train']} labelled reviews alone, and short texts as callers send them."
        )
    served = meta.get("metrics_as_served", {})  # a re-exported version: measured again with its own long-text policy
    metric_rows = "".join(_row(f"{split}, long texts read as this version serves them", served.get(split)) for split in served)
    metric_rows += "".join(
        _row(name, ev.get(key))
        for name, key in (
            ("validation", "validation"),
            ("test", "test"),
            (BASELINE, "baseline_tfidf_logreg_test"),
            (TEACHER, "teacher_nb_trigram_logreg_test"),
        )
    )
    serving = _serving(meta)
    card = f"""# {meta["name"]} v{meta["version"]} — model card

Binary sentiment (negative / positive) of English review text. Output: the
probability that the text is positive; `label` is `positive` when it is at
least {meta["decision_threshold"]}.

## Data
- Training: {ds["source"]} (SHA-256 `{ds["sha256"]}`): {ds["train"]} texts for fitting, {ds["validation"]} for
  early stopping, held out by groups of consecutive review ids (IMDB lists reviews of one movie together), so that
  validation movies are unseen, as in the test split.
- Word vectors pre-trained (word2vec CBOW, {hp["word2vec_epochs"]} epochs) on the training texts{extra}.{distilled}
- Evaluation: {ds["test"]} texts of the test split (disjoint movies).

## Architecture
`Embedding({arch["vocab_size"]}, {arch["embedding_dim"]}, mask_zero)` → SpatialDropout({arch["dropout"]}) → {layers}, {pooling}
→ Dropout({arch["dropout"]}) → `Dense(1, sigmoid)`. Padding (id 0) is masked, so a text's score does not depend on
how far its batch is padded. Tokenizer: `{tok["scheme"]}`, {tok["vocab_size"]} ids; in training, texts longer than
{tok["max_length"]} tokens keep the first {tok["head_length"]} and the last {tok["max_length"] - tok["head_length"]}.
{serving}
Training: Adam (lr {hp["learning_rate"]}{decay}), batch {hp["batch_size"]}, {meta["epochs_run"]} epoch(s) run of at most {hp["epochs"]}
(early stopping on validation accuracy, best weights kept), seed {hp["seed"]}; **{meta["training_seconds"]:.0f} s** of
training (data loading, word vectors and the linear teacher included; evaluation and export take about a minute
more) on a 2-core CPU, TensorFlow {meta["tensorflow_version"]}, Keras {meta["keras_version"]}.{_recipe_extras(meta)}

## Metrics
| split | n | accuracy | ROC AUC | F1 | ECE | log loss |
|---|---|---|---|---|---|---|
{metric_rows}
ECE: expected calibration error over 15 confidence bins.

## Intended use and limits
- Intended: scoring the polarity of English reviews (movies, products) and similar opinionated text, as a probability
  a caller thresholds.
- Language: English only; other languages mostly map to out-of-vocabulary ids and get near-neutral, meaningless scores.
- Domain: trained on movie reviews; product reviews share most of the vocabulary of opinion but domain words
  ("battery", "shipping", "broke") are weak signals, so short product complaints without the opinion words of film
  reviews can be missed. Sarcasm, mixed reviews and comparisons ("better than X") are common errors.
- Length: see "Serving" for how long texts are read; a text cut in the middle says so (`truncated`). Short texts are
  scored, but most of what the model learned came from reviews of ~230 words on average.
- Not for decisions about people; the IMDB data carries the biases of its reviewers.
{_probes(meta.get("probes", []))}"""
    target = path / "MODEL_CARD.md"
    target.write_text(card, encoding="utf-8")
    return target
