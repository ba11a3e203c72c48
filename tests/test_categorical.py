"""A model of three labels served beside the two-label one: every front door, long texts, explanations, metrics.

The store holds the tiny two-label ``sentiment`` and ``tweets``, fine-tuned from it
by the real flow on synthetic texts labelled negative, neutral or positive; the
service serves both through a model config.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from selenium.webdriver.common.by import By

from service.model_store import resolve
from tests.helpers import Service
from tests.test_demo_page import DemoPage, needs_chromium, start_chromium

pytestmark = pytest.mark.slow  # a fine-tune, a service, TensorFlow beside it: end to end

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def served(module_redis, tiny_two_models, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "models.yaml"
    config.write_text("models: {sentiment: {latest: 1}, tweets: {latest: 1}}\n")
    settings = {"SENTIMENT_MODEL_CONFIG": str(config), "SENTIMENT_MAX_BATCH_SIZE": "16"}  # warm-up: 6 buckets of 12
    svc = Service(module_redis.url, tiny_two_models, settings=settings)
    with svc.running():
        yield svc


def tweets_predict(served: Service, payload: dict) -> dict:
    response = served.predict({**payload, "model": "tweets"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Name"] == "tweets" and response.headers["X-Model-Version"] == "1"
    return response.json()


def test_three_labels_answer_label_score_and_scores(served):
    texts = ["great superb loved it yay", "awful terrible ugh smh", "schedule update announced today"]
    body = tweets_predict(served, {"texts": texts})
    assert body["model"] == {"name": "tweets", "version": 1}
    for p in body["predictions"]:
        assert set(p["scores"]) == set(LABELS) and sum(p["scores"].values()) == pytest.approx(1, abs=1e-5)
        assert p["label"] == max(p["scores"], key=p["scores"].get) and p["score"] == pytest.approx(p["scores"][p["label"]])
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative", "neutral"]
    # The two-label model keeps its answers, with scores of its two labels.
    [binary] = served.predict({"text": "great superb film"}).json()["predictions"]
    assert set(binary["scores"]) == {"negative", "positive"} and binary["scores"]["positive"] == pytest.approx(binary["score"])


def test_a_long_text_is_read_in_windows_as_the_signature_reads_it(served, tiny_two_models):
    tf = pytest.importorskip("tensorflow")
    version = resolve(tiny_two_models / "tweets", 1)
    text = " ".join(["great superb yay"] * 20 + ["ugh delayed smh"] * 10)  # 90 tokens: windows of the tiny model's 16
    [p] = tweets_predict(served, {"text": text})["predictions"]
    assert p["windows"] > 1
    signature = tf.saved_model.load(str(version.path)).signatures["predict_text"]
    expected = signature(texts=tf.constant([text]))
    assert [p["scores"][label] for label in LABELS] == pytest.approx(expected["probabilities"].numpy()[0].tolist(), abs=1e-5)
    assert p["label"] == expected["label"].numpy()[0].decode()


def test_explanations_explain_the_chosen_label(served, tiny_two_models):
    [p] = tweets_predict(served, {"text": "awful terrible ugh, not good", "explain": True})["predictions"]
    explanation = p["explanation"]
    assert [t["token"] for t in explanation["tokens"]] == ["awful", "terrible", "ugh", "not", "good"]
    weights = {t["token"]: t["weight"] for t in explanation["tokens"]}
    assert p["label"] == "negative" and weights["awful"] > 0 and weights["terrible"] > 0  # they push toward the label explained


def test_tensorflow_serving_answers_the_signatures_outputs(served):
    body = {"signature_name": "predict_text", "instances": ["great superb yay", "schedule update announced"]}
    response = requests.post(f"{served.url}/v1/models/tweets:predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert set(rows[0]) == {"label", "n_tokens", "probabilities", "token_ids", "windows"}
    assert len(rows[0]["probabilities"]) == 3 and rows[0]["label"] == "positive" and rows[1]["label"] == "neutral"


@pytest.mark.parametrize("binary", [False, True])
def test_kserve_v2_gives_probabilities_of_shape_n_by_k_to_tritonclient(served, binary):
    client = triton.InferenceServerClient(url=served.url.removeprefix("http://"))
    metadata = client.get_model_metadata("tweets")
    assert {o["name"]: o["shape"] for o in metadata["outputs"]}["probabilities"] == [-1, 3]
    texts = triton.InferInput("texts", [2], "BYTES")
    texts.set_data_from_numpy(np.array(["great superb yay", "awful ugh smh"], dtype=object), binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary), triton.InferRequestedOutput("label", binary_data=binary)]
    result = client.infer("tweets", [texts], outputs=outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")]  # bytes when binary
    assert labels == ["positive", "negative"]
    explained = client.infer("tweets", [texts], outputs=[triton.InferRequestedOutput("explanation", binary_data=binary)])
    assert json.loads(explained.as_numpy("explanation")[0])["method"] == "gradient_x_input"


def test_predictions_are_counted_by_the_models_own_labels(served):
    tweets_predict(served, {"text": "schedule update announced today"})
    text = requests.get(f"{served.url}/metrics", timeout=5).text
    assert 'sentiment_predictions_total{label="neutral",model="tweets",version="1"}' in text
    model = requests.get(f"{served.url}/model", params={"model": "tweets"}, timeout=5).json()
    assert model["name"] == "tweets" and model["metadata"]["labels"] == LABELS and model["models"] == ["sentiment", "tweets"]


@needs_chromium
def test_the_demo_page_picks_a_model_and_shows_one_bar_per_label(served, tmp_path):
    from selenium.webdriver.support.select import Select

    driver = start_chromium(tmp_path / "profile")
    try:
        page = DemoPage(driver, served.url).open()
        assert page.shown("model-row") and page.text("model-name") == "sentiment"
        page.classify("great superb film")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#scores li")) == 2 and page.shown("bar")

        Select(page.element("model-select")).select_by_value("tweets")
        page.wait(lambda _: page.text("model-name") == "tweets", "the tweets model")
        announced = page.classify("schedule update announced today")
        rows = driver.find_elements(By.CSS_SELECTOR, "#scores li")
        assert [row.find_element(By.CSS_SELECTOR, "span").text for row in rows] == LABELS
        assert page.text("label") == "Neutral" and announced.startswith("Neutral: P(neutral) = ")
        assert not page.shown("bar") and page.text("result-model") == "tweets v1"
        assert page.console_errors() == []
    finally:
        driver.quit()
