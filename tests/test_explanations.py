"""Explanations: the ``explain`` signature, and ``"explain": true`` through the real API, worker and Redis."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from service.model_store import resolve
from service.tokenizer import split_words_with_spans
from tests.conftest import COMMITTED_MODEL_DIR

tf = pytest.importorskip("tensorflow")


def explain_signature(version_dir):
    return tf.saved_model.load(str(version_dir)).signatures["explain"]


def keras_gradient_x_input(version, ids: list[int]) -> np.ndarray:
    """The reference: gradient × input of each word vector, through the Keras network the version was exported from."""
    from training.reexport import restore_keras_model

    model = restore_keras_model(version)
    embedding = model.get_layer("embedding")
    after = model.layers[model.layers.index(embedding) + 1 :]
    vectors = embedding(tf.constant([ids]))
    with tf.GradientTape() as tape:
        tape.watch(vectors)
        h = vectors
        for layer in after:
            h = layer(h, training=False)
        logit = tf.math.log(h[:, 0] / (1 - h[:, 0]))
    return tf.reduce_sum(tape.gradient(logit, vectors) * vectors, axis=-1).numpy()[0]


def test_the_signature_computes_gradient_x_input_of_the_keras_network(tiny_model_store):
    version = resolve(tiny_model_store / "sentiment", 1)
    explain = explain_signature(version.path)
    rng = np.random.default_rng(0)
    for length in (1, 5, 16):
        ids = rng.integers(2, version.metadata["vocab_size"], size=length).tolist()
        out = explain(token_ids=tf.constant([ids]))
        np.testing.assert_allclose(out["contributions"].numpy()[0], keras_gradient_x_input(version, ids), atol=1e-4)
        p = float(out["probability"].numpy()[0])
        assert float(out["logit"].numpy()[0]) == pytest.approx(np.log(p / (1 - p)), abs=1e-3)


def test_a_texts_weights_do_not_depend_on_its_batch_mates(tiny_model_store):
    explain = explain_signature(tiny_model_store / "sentiment" / "1")
    ids = [5, 9, 14, 3, 7]
    alone = explain(token_ids=tf.constant([ids]))["contributions"].numpy()[0]
    mates = [ids + [0] * 11, list(range(2, 18)), [4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    together = explain(token_ids=tf.constant(mates))["contributions"].numpy()
    np.testing.assert_allclose(together[0][:5], alone, atol=1e-6)
    assert np.all(together[0][5:] == 0) and np.all(together[2][2:] == 0)  # padding weighs nothing


# --- through the service --------------------------------------------------------------------------------


def explained(service, text: str) -> dict:
    response = service.predict({"text": text, "explain": True})
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    return prediction


def test_explain_answers_every_word_with_its_span_in_the_text_as_sent(service):
    text = "The MOVIE was great, Wonderful!\nI loved it… don't miss it"
    prediction = explained(service, text)
    explanation = prediction["explanation"]
    assert explanation["method"] == "gradient_x_input" and isinstance(explanation["logit"], float)
    assert [(t["token"], t["start"], t["end"]) for t in explanation["tokens"]] == split_words_with_spans(text)
    for token in explanation["tokens"]:
        assert token["read"] is True and isinstance(token["weight"], float)
        assert text[token["start"] : token["end"]].lower().replace("'", "") == token["token"]
    p = prediction["score"]
    assert explanation["logit"] == pytest.approx(np.log(p / (1 - p)), abs=1e-3)
    assert "explanation" not in service.predict({"text": text}).json()["predictions"][0]  # only when asked


def test_a_words_weight_does_not_depend_on_the_other_texts_of_the_request(service):
    text = "great superb film, loved it"
    alone = explained(service, text)["explanation"]["tokens"]
    response = service.predict({"texts": ["awful boring", text, "the worst dull mess " * 8], "explain": True})
    together = response.json()["predictions"][1]["explanation"]["tokens"]
    assert [t["weight"] for t in together] == pytest.approx([t["weight"] for t in alone], abs=1e-5)


def test_long_texts_are_explained_in_windows_and_unread_words_say_so(service):
    """The tiny model reads windows of 16, at most 4: a text of 100 tokens loses its middle 36."""
    words = ["great", "awful", "movie", "plot", "superb"]
    text = " ".join(words[i % 5] for i in range(100))
    prediction = explained(service, text)
    tokens = prediction["explanation"]["tokens"]
    assert prediction["windows"] == 4 and prediction["truncated"] is True and len(tokens) == 100
    read = [t["read"] for t in tokens]
    assert read == [True] * 32 + [False] * 36 + [True] * 32
    assert all(t["weight"] is None for t in tokens if not t["read"])
    windowed = explained(service, " ".join(words[i % 5] for i in range(40)))  # 3 windows, all read
    assert windowed["windows"] == 3 and all(t["read"] for t in windowed["explanation"]["tokens"])


def test_explain_requests_are_counted(service):
    def count() -> float:
        text = requests.get(f"{service.url}/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("sentiment_explain_requests_total "))

    before = count()
    explained(service, "great")
    assert count() == before + 1


def test_a_version_without_the_signature_refuses_to_explain(redis_server):
    """v2 was exported before explanations: "explain" is a 400 on /predict and on KServe, which does not list the output."""
    from service.api.app import create_app
    from service.config import Settings

    old = resolve(COMMITTED_MODEL_DIR, 2)
    assert not old.explains and resolve(COMMITTED_MODEL_DIR).explains
    app = create_app(Settings(redis_url=redis_server.url, model_version=2, log_level="WARNING"))
    try:
        client = app.test_client()
        response = client.post("/predict", json={"text": "great", "explain": True})
        assert response.status_code == 400 and "cannot explain" in response.json["error"]["message"]
        outputs = [o["name"] for o in client.get("/v2/models/sentiment").json["outputs"]]
        assert outputs == ["probability", "label"]
        request = {"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["great"]}]}
        response = client.post("/v2/models/sentiment/infer", json={**request, "outputs": [{"name": "explanation"}]})
        assert response.status_code == 400 and "exported before explanations" in response.json["error"]
    finally:
        app.extensions["sentiment"].listener.stop()


@pytest.fixture(scope="module")
def committed_service(tmp_path_factory):
    from service.embedded_redis import EmbeddedRedis
    from tests.helpers import Service

    logs = tmp_path_factory.mktemp("explained")
    with EmbeddedRedis() as server, Service(server.url, COMMITTED_MODEL_DIR.parent, log_dir=logs).running() as svc:
        yield svc


CLEAR_TEXTS = {
    "I loved this movie.": ("loved", "positive"),
    "Terrible film, a complete waste of time.": ("terrible", "negative"),
    "What a waste of two hours, the plot was awful.": ("waste", "negative"),
    "A wonderful, touching story with brilliant acting.": ("wonderful", "positive"),
    "The worst movie I have ever seen.": ("worst", "negative"),
}


@pytest.mark.slow
@pytest.mark.parametrize("text", CLEAR_TEXTS)
def test_on_clear_texts_the_strongest_words_are_the_expected_ones(committed_service, text):
    word, side = CLEAR_TEXTS[text]
    prediction = explained(committed_service, text)
    assert prediction["label"] == side
    tokens = prediction["explanation"]["tokens"]
    ranked = sorted(tokens, key=lambda t: -abs(t["weight"]))
    assert word in [t["token"] for t in ranked[:2]], [(t["token"], round(t["weight"], 2)) for t in ranked]
    [weight] = [t["weight"] for t in tokens if t["token"] == word]
    assert (weight > 0) == (side == "positive")
