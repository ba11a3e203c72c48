"""``python -m training.explanations``: how faithful the served explanations are, against leave-one-token-out occlusion.

The reference is occlusion: a token's effect is how much the logit drops when
that token is deleted and the text is scored again (one more forward pass per
token: too dear to serve). Two cheap candidates are measured against it:

* **gradient × input** on each token's word vector, through the whole network
  (one backward pass): what the service serves (the ``explain`` signature);
* the **additive split** of the logit that the network's last layers give for
  free (a masked mean over steps, then one dense unit: ``logit = bias + Σ_t
  w · h_t / T``, each step's term given to the token read there).

For each text: Spearman's rank correlation between a method's weights and the
occlusion effects, the share of occlusion's 5 strongest tokens found among the
method's 5 strongest, and the sign agreement on those. Cost: CPU of the served
``explain`` signature against ``serving_default``, in batches of 32, per text.
Texts: IMDB test reviews that fit one window, drawn at random.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.explanations", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--data", type=Path, required=True, help="IMDB folder or .tar.gz (its test split is used).")
    p.add_argument("--model", type=Path, default=None, help="Exported version folder (default: the highest under model_store/sentiment).")
    p.add_argument("--texts", type=int, default=500, help="How many reviews to explain.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf
    from scipy.stats import spearmanr

    from service.config import ROOT
    from service.model_store import resolve
    from training.data import load
    from training.pipeline import predict_sorted
    from training.reexport import restore_keras_model

    tf.config.threading.set_intra_op_parallelism_threads(1)
    version = resolve(args.model.parent, int(args.model.name)) if args.model else resolve(ROOT / "model_store" / "sentiment")
    if not version.explains:
        sys.exit(f"{version.name} v{version.version} has no explain signature")
    tokenizer = version.load_tokenizer()
    loaded = tf.saved_model.load(str(version.path))
    explain, serve = loaded.signatures["explain"], loaded.signatures["serving_default"]
    test = load(args.data)["test"]
    rng = np.random.default_rng(args.seed)
    picked = []
    for index in rng.permutation(len(test)):
        encoded = tokenizer.encode(test.texts[index])
        if len(encoded.windows) == 1 and encoded.n_tokens >= 5:
            picked.append(encoded.ids)
        if len(picked) == args.texts:
            break

    def logits(sequences: list[list[int]]) -> np.ndarray:
        probability = predict_sorted(lambda ids: serve(token_ids=tf.constant(ids))["probability"].numpy(), sequences)
        probability = np.clip(probability, 1e-7, 1 - 1e-7)
        return np.log(probability / (1 - probability))

    def padded(sequences: list[list[int]]) -> tf.Tensor:
        ids = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int32)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
        return tf.constant(ids)

    # The served method, and its cost against a plain prediction: the same batches of 32, every batch shape
    # compiled beforehand (as a worker does at start), median of 3 rounds of each in turn.
    batches = [picked[start : start + 32] for start in range(0, len(picked), 32)]
    for batch in {len(b): b for b in batches}.values():
        explain(token_ids=padded(batch)), serve(token_ids=padded(batch))
    served = []
    for batch in batches:
        contributions = explain(token_ids=padded(batch))["contributions"].numpy()
        served += [row[: len(ids)] for row, ids in zip(contributions, batch, strict=True)]
    rounds: dict[str, list[float]] = {"explain": [], "plain": []}
    for _ in range(3):
        for name, signature in (("explain", explain), ("plain", serve)):
            started = time.process_time()
            for batch in batches:
                signature(token_ids=padded(batch))
            rounds[name].append(time.process_time() - started)
    cost = {name: float(np.median(values)) for name, values in rounds.items()}

    # The additive split, from the Keras network's per-step outputs (one text at a time: no padding, no mask).
    model = restore_keras_model(version)
    steps = keras.Model(model.inputs, model.get_layer("bilstm").output)
    kernel, _ = model.get_layer("probability").get_weights()
    additive = [(steps([np.array([ids])])[0].numpy() @ kernel[:, 0]) / len(ids) for ids in picked]

    # The reference: delete each token in turn and score again.
    occlusion = []
    for ids in picked:
        full = logits([ids])[0]
        occlusion.append(full - logits([ids[:i] + ids[i + 1 :] for i in range(len(ids))]))

    def agreement(weights: list[np.ndarray]) -> dict:
        rho, top_overlap, sign = [], [], []
        for w, ref in zip(weights, occlusion, strict=True):
            rho.append(spearmanr(w, ref).statistic)
            top_ref = set(np.argsort(-np.abs(ref))[:5])
            top_w = set(np.argsort(-np.abs(w))[:5])
            top_overlap.append(len(top_ref & top_w) / 5)
            sign.append(np.mean([np.sign(w[i]) == np.sign(ref[i]) for i in top_ref]))
        return {
            "spearman_median": round(float(np.nanmedian(rho)), 3),
            "spearman_mean": round(float(np.nanmean(rho)), 3),
            "top5_overlap_mean": round(float(np.mean(top_overlap)), 3),
            "top5_sign_agreement": round(float(np.mean(sign)), 3),
        }

    report = {
        "model": f"{version.name} v{version.version}",
        "texts": len(picked),
        "mean_tokens": round(float(np.mean([len(ids) for ids in picked])), 1),
        "reference": "leave-one-token-out occlusion (logit drop when the token is deleted)",
        "gradient_x_input (served)": {**agreement(served), "cpu_vs_plain_prediction": round(cost["explain"] / cost["plain"], 2)},
        "additive_split": agreement(additive),
    }
    print(json.dumps(report, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
