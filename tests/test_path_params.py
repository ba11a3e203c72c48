"""Request data never becomes a file path: climbing paths against every route with a path parameter.

Sent byte for byte (``http.client``; ``requests`` would remove the dot segments),
in every method, each climb once towards a file that exists on the host and once
towards one that does not: both must get the same answer, 404 or 405, never a
200 (the route read something) or a 500 (it tried to); and the service answers
afterwards.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.api.demo import FINGERPRINTS

EXISTING, MISSING = "etc/hostname", "etc/no-such-file-here"
EXISTING_CONTENT = Path("/", EXISTING).read_bytes().strip()
CLIMBS = [
    "../../../../{target}",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/{target}",
    "..%2f..%2f..%2f..%2f{target}",
    "..%5c..%5c..%5c..%5c{target}",
    "....//....//....//....//{target}",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f{target}",
]
# Every rule with a path parameter, the parameter written as {p}.
ROUTES = [
    "/static/{p}",
    "/docs/assets/{p}",
    "/v1/models/{p}",
    "/v1/models/{p}/metadata",
    "/v1/models/{p}:predict",
    "/v1/models/sentiment/versions/{p}",
    "/v2/models/{p}",
    "/v2/models/{p}/ready",
    "/v2/models/{p}/infer",
    "/v2/models/sentiment/versions/{p}/infer",
]
METHODS = ["GET", "HEAD", "OPTIONS", "POST"]


def raw(service, method: str, path: str) -> tuple[int, bytes]:
    url = urlsplit(service.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if method == "POST" else {}
        connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("route", ROUTES)
def test_climbing_paths_read_nothing(service, route):
    for climb in CLIMBS:
        for method in METHODS:
            answers = {}
            for target in (EXISTING, MISSING):
                path = route.format(p=climb.format(target=target))
                status, body = raw(service, method, path)
                assert status in (404, 405), (method, path, status, body[:200])
                assert b"Traceback" not in body and EXISTING_CONTENT not in body, (method, path)
                answers[target] = status
            assert answers[EXISTING] == answers[MISSING], (method, route, climb, answers)
    assert service.predict({"text": "great film"}).status_code == 200  # still answering


def test_static_files_are_only_the_folders_own(service):
    for name in FINGERPRINTS:
        assert raw(service, "GET", f"/static/{name}")[0] == 200
        assert raw(service, "POST", f"/static/{name}")[0] == 405
    for name in ("index.html", "nothing.js", "0", "demo.js/", ".", "..", "%2e%2e"):
        for method in METHODS:
            assert raw(service, method, f"/static/{name}")[0] == 404, (method, name)


def test_options_is_not_answered_for_any_route(service):
    # No CORS, so OPTIONS is a method like any other the routes do not take (Flask would answer 200 for any match).
    for path in ("/predict", "/v1/models/sentiment", "/v2/models/sentiment/infer", "/static/demo.js", "/"):
        assert raw(service, "OPTIONS", path)[0] == 405, path
