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
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, render_template_string, request, url_for

bp = Blueprint("demo", __name__, static_folder="static", static_url_path="/static")

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


@cache
def fingerprint(filename: str) -> str:
    """First 12 hex digits of the file's SHA-256: changes whenever its content does (files are read once a process)."""
    return hashlib.sha256((STATIC / filename).read_bytes()).hexdigest()[:12]


def asset(filename: str) -> str:
    """URL of a static file, stamped with its fingerprint."""
    return url_for("demo.static", filename=filename, v=fingerprint(filename))


@cache
def page_source() -> str:
    """The page's template (it only names its files through ``asset``), read once a process."""
    return (STATIC / PAGE).read_text(encoding="utf-8")


@bp.get("/")
def index() -> Response:
    html = render_template_string(page_source(), asset=asset)
    response = Response(html, mimetype="text/html", headers=SECURITY_HEADERS)
    response.cache_control.no_cache = True
    response.add_etag()
    return response.make_conditional(request)


@bp.after_request
def cache_static(response: Response) -> Response:
    """Fingerprinted files are cached for good; anything else keeps Flask's revalidation (no-cache + ETag)."""
    if request.endpoint == "demo.static" and response.status_code in (200, 304):
        response.headers["X-Content-Type-Options"] = "nosniff"
        filename = (request.view_args or {}).get("filename", "")
        if filename != PAGE and request.args.get("v") == fingerprint(filename):
            response.headers["Cache-Control"] = IMMUTABLE
    return response
