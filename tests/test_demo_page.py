"""The demo page at ``GET /``, in a real headless Chromium against the real service (gunicorn, worker, Redis).

The browser is Debian's ``chromium`` driven through its ``chromedriver`` (``apt-get install chromium
chromium-driver``); without them the browser tests are skipped, saying so.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from service.config import ROOT
from service.model_store import resolve
from tests.conftest import COMMITTED_MODEL_DIR
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and quiet: without the background-networking flags Chromium calls Google's servers on start.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
STATIC = ROOT / "service" / "api" / "static"
EXAMPLES = json.loads((STATIC / "examples.json").read_text(encoding="utf-8"))
REVIEW = "the movie was great wonderful superb, i loved it"
WAIT_S = 20
MISSING = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
needs_chromium = pytest.mark.skipif(
    bool(MISSING), reason=f"the browser tests need {' and '.join(MISSING)} (apt-get install chromium chromium-driver)"
)


def start_chromium(user_data_dir: Path, width: int = 1200, height: int = 900) -> webdriver.Chrome:
    """Headless Chromium with its network and console logs kept, on a fresh profile."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))


@dataclass
class DemoPage:
    """The page as a person uses it: what they can type, click and read."""

    driver: webdriver.Chrome
    url: str

    def open(self) -> DemoPage:
        self.driver.get(f"{self.url}/")
        self.wait(lambda _: self.text("model-version") not in ("", "…"), "the model's name and version")
        self.wait(lambda _: len(self.examples()) == len(EXAMPLES), "the example buttons")
        return self

    def wait(self, condition, what: str):
        try:
            return WebDriverWait(self.driver, WAIT_S).until(condition)
        except TimeoutException:
            raise AssertionError(f"the page did not show {what} within {WAIT_S} s") from None

    def element(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        return self.element(element_id).text

    def shown(self, element_id: str) -> bool:
        return self.element(element_id).is_displayed()

    def examples(self) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, "#examples button")

    def type_text(self, text: str) -> None:
        box = self.element("text")
        box.clear()
        box.send_keys(text)

    def status(self) -> str:
        """What the live region announces (it is visually hidden: the result shows the same)."""
        return self.element("status").get_property("textContent")

    def answer(self, action) -> str:
        """Do ``action`` (a click, a key) and wait for the page to show the answer; returns what it announced."""
        self.driver.execute_script("document.getElementById('status').textContent = ''")
        action()
        return self.wait(lambda _: self.status() not in ("", "Classifying…") and self.status(), "an answer")

    def classify(self, text: str) -> str:
        self.type_text(text)
        return self.answer(self.element("classify").click)

    def error(self) -> tuple[str, str]:
        assert self.shown("error"), "no error is shown"
        return self.text("error-message"), self.text("error-detail")

    def console_errors(self) -> list[dict]:
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def requested_urls(self) -> list[str]:
        """URLs the browser asked for since the last call (Chrome's network log)."""
        events = (json.loads(entry["message"])["message"] for entry in self.driver.get_log("performance"))
        return [event["params"]["request"]["url"] for event in events if event["method"] == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, service) -> DemoPage:
    browser.get_log("browser")  # start each test with empty logs
    browser.get_log("performance")
    return DemoPage(browser, service.url).open()


def model_info(service) -> dict:
    response = requests.get(f"{service.url}/model", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def api_prediction(service, text: str) -> dict:
    response = service.predict({"text": text})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


# --- what the page shows -------------------------------------------------------------------


@needs_chromium
def test_classifies_a_review_as_the_api_does(page, service, tmp_path):
    info = model_info(service)
    assert page.text("model-name") == info["name"]
    assert page.text("model-version") == str(info["version"])

    status = page.classify(REVIEW)
    expected = api_prediction(service, REVIEW)
    assert page.text("label") == expected["label"].capitalize()
    assert page.element("label").get_attribute("data-label") == expected["label"]
    assert status.startswith(f"{expected['label'].capitalize()}: P(positive) = ")
    score = page.element("score")
    assert float(score.get_attribute("data-score")) == pytest.approx(expected["score"], abs=1e-5)
    assert float(score.text) == pytest.approx(expected["score"], abs=6e-4) and re.fullmatch(r"[01]\.\d{3}", score.text)
    assert float(page.element("bar").get_attribute("aria-valuenow")) == pytest.approx(expected["score"], abs=1e-5)
    fill_ratio = "const f = document.getElementById('bar-fill'); return f.offsetWidth / f.parentElement.clientWidth"
    wait_until(lambda: abs(page.driver.execute_script(fill_ratio) - expected["score"]) < 0.02, 5, what="the bar to show the score")
    assert page.text("tokens") == str(expected["tokens"])
    assert not page.shown("truncated-badge") and not page.shown("truncated-row")
    assert re.fullmatch(r"\d+ ms", page.text("latency"))
    assert re.fullmatch(r"[0-9a-f]{32}", page.text("request-id"))
    assert page.text("result-model") == f"{info['name']} v{info['version']}"
    assert page.text("classified-text") == REVIEW
    assert page.text("windows") == str(expected["windows"])
    # The explanation: each word of the text in a span tinted by the sign of its weight, as the API explains it.
    explained = service.predict({"text": REVIEW, "explain": True}).json()["predictions"][0]["explanation"]["tokens"]
    words = page.driver.find_elements(By.CSS_SELECTOR, "#classified-text .w")
    assert len(words) == len(explained) > 3 and page.shown("legend")
    for word, token in zip(words, explained, strict=True):
        assert word.text == REVIEW[token["start"] : token["end"]]
        assert float(word.get_attribute("data-weight")) == pytest.approx(token["weight"], abs=1e-5)
        assert ("pos" if token["weight"] >= 0 else "neg") in word.get_attribute("class").split()
    assert not page.shown("error")
    live = page.element("status")
    assert live.get_attribute("aria-live") == "polite" and live.get_attribute("role") == "status"
    assert page.element("error").get_attribute("role") == "alert"
    # Nothing refused by the Content-Security-Policy, no script error, no failed load.
    assert page.console_errors() == []

    screenshot = tmp_path / "demo-page.png"
    assert page.driver.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_chromium
def test_examples_are_one_click_away(page, service):
    assert [button.text for button in page.examples()] == [example["name"] for example in EXAMPLES]
    long_review = next(example for example in EXAMPLES if "400" in example["name"])
    expected = api_prediction(service, long_review["text"])
    assert expected["truncated"] is True

    page.answer(page.examples()[EXAMPLES.index(long_review)].click)
    assert page.element("text").get_property("value") == long_review["text"]
    assert page.text("label") == expected["label"].capitalize()
    assert page.text("tokens") == str(expected["tokens"])
    assert page.shown("truncated-badge") and page.text("truncated-badge") == "truncated"
    assert page.text("truncated").startswith(f"yes: {expected['tokens']} tokens")


def test_the_long_example_is_read_whole_in_windows_by_the_committed_model():
    tokenizer = resolve(COMMITTED_MODEL_DIR).load_tokenizer()
    [long_review] = [example["text"] for example in EXAMPLES if "400" in example["name"]]
    encoded = tokenizer.encode(long_review)
    assert encoded.n_tokens > 400 and len(encoded.windows) == 2 and not encoded.truncated
    assert {"Positive movie review", "Negative movie review", "Product review", "Negation"} <= {e["name"] for e in EXAMPLES}
    assert next(e["text"] for e in EXAMPLES if e["name"] == "Negation") == "Not bad at all."


@needs_chromium
def test_blank_text_shows_the_api_400_message(page, service):
    expected = service.predict({"text": "   "})
    assert expected.status_code == 400
    page.classify("   ")
    message, detail = page.error()
    assert message == expected.json()["error"]["message"]
    assert detail.startswith("HTTP 400") and "bad_request" in detail and re.search(r"request id [0-9a-f]{32}", detail)
    assert not page.shown("prediction")


@needs_chromium
def test_keyboard_only(page, service):
    ActionChains(page.driver).send_keys(Keys.TAB).perform()
    box = page.driver.switch_to.active_element
    assert box.get_attribute("id") == "text"
    assert page.driver.execute_script("return arguments[0].labels[0].textContent", box) == "Text to classify"

    typed = "Dull and far too long, a waste of two hours."
    ActionChains(page.driver).send_keys(typed).perform()
    page.answer(ActionChains(page.driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform)
    assert page.text("classified-text") == typed
    assert box.get_property("value") == typed  # Ctrl+Enter submitted; it did not add a line
    assert page.text("label") == api_prediction(service, typed)["label"].capitalize()

    ActionChains(page.driver).send_keys(Keys.TAB).perform()
    explain_box = page.driver.switch_to.active_element
    assert explain_box.get_attribute("id") == "explain" and explain_box.is_selected()
    ActionChains(page.driver).send_keys(Keys.SPACE).perform()  # the explanation is one key away from off
    assert not explain_box.is_selected()
    ActionChains(page.driver).send_keys(Keys.SPACE).perform()

    ActionChains(page.driver).send_keys(Keys.TAB).perform()
    button = page.driver.switch_to.active_element
    assert button.get_attribute("id") == "classify"
    focus_ring = "const s = getComputedStyle(arguments[0]); return [arguments[0].matches(':focus-visible'), s.outlineStyle, s.outlineWidth]"
    visible, style, width = page.driver.execute_script(focus_ring, button)
    assert visible and style != "none" and width != "0px"

    ActionChains(page.driver).send_keys(Keys.TAB).perform()
    first_example = page.driver.switch_to.active_element
    assert first_example.text == EXAMPLES[0]["name"]
    page.answer(ActionChains(page.driver).send_keys(Keys.ENTER).perform)
    assert page.text("classified-text") == EXAMPLES[0]["text"]


@needs_chromium
def test_phone_width_without_horizontal_scrolling(page, tmp_path):
    metrics = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True}
    page.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        page.open()
        page.answer(page.examples()[-1].click)  # the long review, with the truncation note
        # A mobile browser lays out 980 px wide unless the page's viewport meta says otherwise.
        assert page.driver.execute_script("return window.innerWidth") == 360
        widths = page.driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px viewport"
        for element_id in ("text", "classify", "bar", "request-id"):
            right = page.driver.execute_script("return arguments[0].getBoundingClientRect().right", page.element(element_id))
            assert right <= 360, f"#{element_id} ends at {right} px"
        assert page.driver.save_screenshot(str(tmp_path / "demo-page-phone.png"))
    finally:
        page.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --- nothing from elsewhere; headers ---------------------------------------------------------


@needs_chromium
def test_no_request_leaves_the_service(page, service):
    page.answer(page.examples()[0].click)
    origin = f"{service.url}/"
    urls = page.requested_urls()
    paths = {urlsplit(url).path for url in urls}
    assert {"/", "/model", "/predict", "/static/demo.js", "/static/demo.css", "/static/examples.json"} <= paths
    assert [url for url in urls if not url.startswith(origin)] == []
    loaded = page.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and [url for url in loaded if not url.startswith(origin)] == []


def test_static_files_name_no_other_origin():
    svg_namespace = "http://www.w3.org/2000/svg"
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".svg":
            text = text.replace(svg_namespace, "")
        assert not re.findall(r"(?:[a-z][a-z0-9+.-]*:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", text, re.IGNORECASE), path.name
        assert "@import" not in text and "url(" not in text, path.name


def test_page_and_static_headers(service):
    page = requests.get(f"{service.url}/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["ETag"]
    again = requests.get(f"{service.url}/", headers={"If-None-Match": page.headers["ETag"]}, timeout=5)
    assert again.status_code == 304

    assets = re.findall(r'(?:href|src|data-src)="(/static/[^"?]+)\?v=([0-9a-f]{12})"', page.text)
    assert {path for path, _ in assets} == {"/static/demo.css", "/static/demo.js", "/static/examples.json", "/static/favicon.svg"}
    for path, version in assets:
        stamped = requests.get(f"{service.url}{path}?v={version}", timeout=5)
        assert stamped.status_code == 200 and stamped.headers["Cache-Control"] == "public, max-age=31536000, immutable", path
        for stale in (f"{path}", f"{path}?v=000000000000"):
            response = requests.get(f"{service.url}{stale}", timeout=5)
            assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache" and response.headers["ETag"], stale


# --- failures --------------------------------------------------------------------------------


@needs_chromium
def test_worker_stopped_shows_the_503_message(page, service):
    for worker in service.workers:
        worker.send_signal(signal.SIGTERM)
    for worker in service.workers:
        worker.wait(30)
    try:
        wait_until(lambda: service.predict({"text": REVIEW}).status_code == 503, 20, what="the API to answer 503")
        refused = service.predict({"text": REVIEW})
        assert refused.status_code == 503, refused.text
        page.classify(REVIEW)
        message, detail = page.error()
        assert message == refused.json()["error"]["message"]
        assert detail.startswith("HTTP 503") and "unavailable" in detail
        assert f"retry after {refused.headers['Retry-After']} s" in detail
        assert not page.shown("prediction")
    finally:
        service.start_worker()


@needs_chromium
def test_network_failure_gets_a_message(page):
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    page.driver.execute_cdp_cmd("Network.enable", {})
    page.driver.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        page.classify(REVIEW)
        message, detail = page.error()
        assert message == "Could not reach the service."
        assert "Check that the service is running" in detail
        assert not page.shown("prediction")
    finally:
        page.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
