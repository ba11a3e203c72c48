"""``/openapi.json`` and ``/docs``: a valid OpenAPI 3.1 document of every route, that real answers keep to, readable offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from pydantic import BaseModel

from service.api.schemas import common, kserve, native, tfserving
from tests.helpers import wait_until
from tests.test_demo_page import needs_chromium, start_chromium

INFERENCE = {("post", "/predict"), ("post", "/v1/models/{name}:predict"), ("post", "/v1/models/{name}/versions/{version}:predict")}
INFERENCE |= {("post", "/v2/models/{name}/infer"), ("post", "/v2/models/{name}/versions/{version}/infer")}
INFERENCE |= {("post", "/v1/models/{name}/labels/{label}:predict")}
ERROR_MODELS = {"tensorflow-serving": "TFServingError", "kserve-v2": "KServeError"}  # every other tag: the service's ErrorResponse
DEFAULT_DEADLINE_MS = 2000  # tests/conftest.py's service keeps the server's default
HTTP_TOLERANCE_S = 1.0  # a busy 2-core machine's HTTP round trip on top of the deadline


@pytest.fixture(scope="module")
def document(service) -> dict:
    response = requests.get(f"{service.url}/openapi.json", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


def schema_model(name: str) -> type[BaseModel]:
    """The pydantic model a component schema of the document is named after (one of the protocols' schema modules)."""
    [model] = {getattr(module, name) for module in (common, native, tfserving, kserve) if hasattr(module, name)}
    return model


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def ref_name(schema: dict) -> str:
    return schema["$ref"].removeprefix("#/components/schemas/")


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on the first problem, with its path in the document


def test_the_document_covers_every_route_and_nothing_else(service, document, monkeypatch):
    """Flask's URL map of a real application, against the document, both ways (HEAD and OPTIONS are Flask's, for every route)."""
    for name, value in service.env().items():
        if name.startswith("SENTIMENT_"):
            monkeypatch.setenv(name, value)
    from service.api.app import create_app

    app = create_app()
    try:
        routes = set()
        for rule in app.url_map.iter_rules():
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    finally:
        app.extensions["sentiment"].listener.stop()
    documented = {(path, method) for path, method, _ in operations(document)}
    assert routes - documented == set(), "routes missing from /openapi.json"
    assert documented - routes == set(), "operations in /openapi.json that no route serves"
    assert {("/v1/models/{name}:predict", "post"), ("/v2/models/{name}/infer", "post"), ("/predict", "post"), ("/docs", "get")} <= routes


def test_every_answer_declares_its_body_and_headers(document):
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        [tag] = operation["tags"]
        assert operation["summary"] and operation["operationId"], where
        parameters = {p.get("$ref", p.get("name")) for p in operation["parameters"]}
        assert "#/components/parameters/X-Request-ID" in parameters, where
        assert ("#/components/parameters/X-Deadline-Ms" in parameters) == ((method, path) in INFERENCE), where
        statuses = set(operation["responses"])
        assert "200" in statuses and "400" in statuses, where
        if (method, path) in INFERENCE:
            assert {"413", "503", "504"} <= statuses, where
            assert "Retry-After" in operation["responses"]["503"]["headers"], where
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], f"{where} {status}"
            readiness_answer = status == "503" and (path == "/readyz" or path.endswith("/ready"))
            if int(status) < 400 or readiness_answer:
                continue
            schema = response["content"]["application/json"]["schema"]
            names = [ref_name(s) for s in schema["anyOf"]] if "anyOf" in schema else [ref_name(schema)]
            assert names[0] == ERROR_MODELS.get(tag, "ErrorResponse"), f"{where} {status}: {names}"
            assert names[1:] in ([], ["ErrorResponse"]), f"{where} {status}: {names}"  # a URL no route matches


def test_examples_are_bodies_the_schemas_accept(document):
    checked = 0
    for name in document["components"]["schemas"]:
        model = schema_model(name)
        for example in document["components"]["schemas"][name].get("examples", []):
            model.model_validate(example)
            checked += 1
    for path, method, operation in operations(document):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            model = schema_model(ref_name(media["schema"])) if "$ref" in media["schema"] else None
            for example in media.get("examples", {}).values():
                assert isinstance(model, type) and issubclass(model, BaseModel), f"{method} {path}"
                model.model_validate(example["value"])
                checked += 1
    assert checked >= 20


def test_real_answers_match_the_examples_shapes(service):
    """The examples were copied from real answers; these answers still have the same keys."""
    answers = {
        "/v1/models/sentiment": tfserving.ModelStatusResponse,
        "/v1/models/sentiment/metadata": tfserving.ModelMetadataResponse,
        "/v2": kserve.ServerMetadataResponse,
        "/v2/models/sentiment": kserve.KServeModelMetadataResponse,
        "/readyz": native.ReadyResponse,
        "/model": native.ModelInfoResponse,
    }
    for path, model in answers.items():
        body = requests.get(f"{service.url}{path}", timeout=5).json()
        model.model_validate(body)
        [example] = model.model_config["json_schema_extra"]["examples"][:1]
        assert set(body) == set(example), path


# --- /docs ------------------------------------------------------------------------------------------


def test_docs_page_and_its_files_come_from_the_service(service, document):
    response = requests.get(f"{service.url}/docs", timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    html = response.text
    assert "://" not in html, "the page names another origin"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "://" not in csp and "*" not in csp
    urls = re.findall(r'(?:src|href|data-spec-url)="([^"]+)"', html)
    assert len(urls) == 5 and all(url.startswith("/") for url in urls)
    types = {}
    for url in urls:
        asset = requests.get(f"{service.url}{url}", timeout=10)
        assert asset.status_code == 200 and asset.content, url
        types[url.split("?")[0].rsplit(".", 1)[-1]] = asset.headers["Content-Type"].split(";")[0]
    assert types == {"png": "image/png", "css": "text/css", "js": "text/javascript", "json": "application/json"}
    assert requests.get(f"{service.url}/docs/assets/nope.js", timeout=5).status_code == 404
    assert requests.get(f"{service.url}/docs/assets/../schemas.py", timeout=5).status_code == 404


@needs_chromium
@pytest.mark.slow
def test_docs_page_renders_every_operation_offline(service, document, tmp_path: Path):
    """In a real browser: every operation is listed, nothing failed, and nothing was asked of another origin."""
    driver = start_chromium(tmp_path / "profile", 1200, 900)
    try:
        driver.get(f"{service.url}/docs")
        expected = sum(1 for _ in operations(document))
        wait_until(lambda: len(driver.find_elements("css selector", ".opblock")) == expected, 30, what="Swagger UI to list the operations")
        assert driver.find_element("css selector", ".info .title").text.startswith("Sentiment inference service")
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        events = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
        requested = {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}
        page_urls = {u for u in requested if u.startswith(("http:", "https:"))}
        assert f"{service.url}/openapi.json" in page_urls
        assert {u for u in page_urls if not u.startswith(service.url)} == set()
    finally:
        driver.quit()


# --- the document against the live service, property-based -------------------------------------------


def client_deadline_ms(case) -> int | None:
    given = (case.headers or {}).get("X-Deadline-Ms")
    if isinstance(given, str) and given.strip().isdigit() and int(given) > 0:
        return int(given)
    return None


def within_the_deadline(ctx, response, case) -> bool | None:
    """No answer later than the request's deadline (its X-Deadline-Ms, at most the server's default), plus the HTTP round trip."""
    deadline_ms = min(client_deadline_ms(case) or DEFAULT_DEADLINE_MS, DEFAULT_DEADLINE_MS)
    limit_s = deadline_ms / 1000 + HTTP_TOLERANCE_S
    assert response.elapsed <= limit_s, f"answered in {response.elapsed:.3f} s; the deadline was {deadline_ms} ms"
    return None


def no_server_error(ctx, response, case) -> bool | None:
    """No 5xx, except the 504 of a deadline the client shortened itself (1 ms is a valid X-Deadline-Ms, and too short)."""
    if response.status_code >= 500:
        allowed = response.status_code == 504 and client_deadline_ms(case) is not None
        assert allowed, f"{response.status_code}: {response.text[:500]}"
    return None


EXAMPLES_PER_OPERATION = 30  # per generation mode (valid and invalid requests): about 1,600 requests in all


@pytest.mark.slow
def test_the_service_keeps_to_its_document(service):
    """Generated requests, valid and invalid, to every operation (a fixed number each, derandomized): no 5xx (the
    504 of a client's own deadline aside), no answer the document does not describe (status, content type, body,
    headers), none past its deadline. Every operation is run; the failures are reported together."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    checks = [
        no_server_error,
        within_the_deadline,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_schema_conformance,
        schemathesis.checks.response_headers_conformance,
        schemathesis.checks.negative_data_rejection,
    ]
    settings = hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: the first failure is reported as found
    )
    served = {"name": "sentiment", "version": "1"}  # tests/conftest.py's tiny model
    failures, operations_run = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations_run += 1
        arguments = {p.name for p in operation.path_parameters}
        strategies = {f"{mode.value}": operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode}
        if arguments:  # generated names and versions are nearly always unknown (404): also ask for the served model
            real = {name: served[name] for name in arguments if name in served}
            for mode in schemathesis.GenerationMode:
                strategies[f"{mode.value}, served model"] = operation.as_strategy(generation_mode=mode, path_parameters=real)
        for index, strategy in enumerate(schema.get_strategies_from_examples(operation)):
            strategies[f"documented example {index}"] = strategy
        for kind, strategy in strategies.items():

            @settings
            @hypothesis.given(case=strategy)
            def exchange(case) -> None:
                case.call_and_validate(checks=checks, timeout=10)

            try:
                exchange()
            except (Exception, BaseExceptionGroup) as exc:  # a check's failure: keep going, report every operation's together
                failures.append(f"{operation.label} ({kind}): {str(exc)[:1500]}")
    assert operations_run >= 25
    assert failures == [], "\n\n".join(failures)
