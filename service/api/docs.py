"""``GET /docs``: interactive documentation of ``/openapi.json`` (Swagger UI), served entirely by the service.

Swagger UI's files come from the ``flask-swagger-ui`` wheel (its ``dist``
folder, pinned in requirements-api.txt) and are served from ``/docs/assets/``;
the page and its start-up script are here. Nothing is loaded from another
origin, so the page works without internet access, and its
Content-Security-Policy allows nothing else. Swagger UI's call to an online
validator is switched off (``validatorUrl: null``).
"""

from __future__ import annotations

from html import escape
from importlib.metadata import version
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, send_from_directory, url_for

from service.api.openapi import Body, documented
from service.api.static_files import file_names, one_of

bp = Blueprint("docs", __name__)

ASSETS = Path(flask_swagger_ui.__file__).parent / "dist"
ASSET_FILES = file_names(ASSETS)  # the only names its route matches (service.static_files)
ASSETS_VERSION = version("flask-swagger-ui")  # in the assets' URLs: a new Swagger UI is fetched at once
IMMUTABLE_S = 365 * 24 * 3600

# Swagger UI sets inline styles and shows images as data: URLs; scripts, styles, images and requests stay on this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Sentiment inference service: API</title>
  <link rel="icon" type="image/png" href="{favicon}">
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec}"></div>
  <script src="{bundle}"></script>
  <script src="{init}"></script>
</body>
</html>
"""

INIT_SCRIPT = """"use strict";
// Starts Swagger UI on this service's own OpenAPI document (its URL is on the container element).
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.specUrl,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  displayRequestDuration: true,
  validatorUrl: null,
});
"""

_PAGE_RESPONSE = Body(media_type="text/html", schema={"type": "string"})


def _asset(filename: str) -> str:
    return url_for("docs.asset", filename=filename, v=ASSETS_VERSION)


@bp.get("/docs")
@documented("Interactive API documentation (Swagger UI)", tag="pages", responses={200: ("The page.", _PAGE_RESPONSE)})
def page() -> Response:
    html = PAGE.format(
        favicon=escape(_asset("favicon-32x32.png")),
        css=escape(_asset("swagger-ui.css")),
        bundle=escape(_asset("swagger-ui-bundle.js")),
        init=escape(url_for("docs.init_script", v=ASSETS_VERSION)),
        spec=escape(url_for("openapi.openapi_json")),
    )
    response = Response(html, mimetype="text/html", headers=SECURITY_HEADERS)
    response.cache_control.no_cache = True
    return response


@bp.get("/docs/init.js")
@documented(
    "The script that starts Swagger UI on /openapi.json",
    tag="pages",
    responses={200: ("JavaScript.", Body(media_type="text/javascript", schema={"type": "string"}))},
)
def init_script() -> Response:
    response = Response(INIT_SCRIPT, mimetype="text/javascript", headers={"X-Content-Type-Options": "nosniff"})
    response.cache_control.no_cache = True
    return response


@bp.get(f"/docs/assets/<{one_of(ASSET_FILES)}:filename>")
@documented(
    "A file of Swagger UI (from the flask-swagger-ui package)",
    tag="pages",
    responses={200: ("The file.", Body(media_type="*/*", schema={"type": "string"})), 404: "No such file."},
    parameters={"filename": "swagger-ui-bundle.js, swagger-ui.css, favicon-32x32.png, ..."},
)
def asset(filename: str) -> Response:
    response = send_from_directory(ASSETS, filename, max_age=IMMUTABLE_S)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
