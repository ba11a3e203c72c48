"""The demo page: ``GET /`` and its static files (HTML, CSS, JavaScript), served by the service itself.

The page is a plain client of the public API (``GET /model``, ``POST /predict``), so what it shows is
what any client gets. Everything it loads comes from this service: it works offline, and its
Content-Security-Policy allows nothing else.

Caching: the page links its files with a fingerprint of their content (``/static/demo.js?v=<hash>``),
so a browser may keep them for a year and still picks up a new release at once; the page itself and
files asked for without the current fingerprint are revalidated on every load (ETag).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, Response, render_template_string, request, send_from_directory, url_for

from service.api.openapi import Body, documented
from service.api.static_files import file_names, one_of

bp = Blueprint("demo", __name__)

STATIC = Path(__file__).parent / "static"
PAGE = "index.html"
IMMUTABLE = "public, max-age=31536000, immutable"

# The page's own origin only; no inline script or style, no plugins, no framing, no form posts elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# The files of static/ (but the page's template) and their fingerprints, read once at start: the first 12 hex
# digits of each file's SHA-256, which change whenever its content does. The static route matches these names
# only (service.static_files): any other name is 404 in every method, and nothing is read for it.
FINGERPRINTS = {name: hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12] for name in file_names(STATIC, exclude=[PAGE])}
PAGE_SOURCE = (STATIC / PAGE).read_text(encoding="utf-8")  # the page's template: it names its files through `asset`


def asset(filename: str) -> str:
    """URL of a static file, stamped with its fingerprint."""
    return url_for("demo.static", filename=filename, v=FINGERPRINTS[filename])


@bp.get("/")
@documented(
    "The demo page",
    tag="pages",
    description="An HTML page that scores texts through `POST /predict`; everything it loads comes from this service.",
    responses={200: ("The page.", Body(media_type="text/html", schema={"type": "string"}))},
)
def index() -> Response:
    html = render_template_string(PAGE_SOURCE, asset=asset)
    response = Response(html, mimetype="text/html", headers=SECURITY_HEADERS)
    response.cache_control.no_cache = True
    response.add_etag()
    return response.make_conditional(request)


@bp.get(f"/static/<{one_of(FINGERPRINTS)}:filename>", endpoint="static")
@documented(
    "A static file of the demo page",
    tag="pages",
    responses={200: ("The file.", Body(media_type="*/*", schema={"type": "string"})), 404: "No such file."},
    parameters={"filename": ", ".join(FINGERPRINTS)},
)
def static_file(filename: str) -> Response:
    """Fingerprinted files are cached for good; anything else is revalidated (no-cache + ETag)."""
    response = send_from_directory(STATIC, filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.args.get("v") == FINGERPRINTS[filename]:
        response.headers["Cache-Control"] = IMMUTABLE
    return response
