"""The demo page: ``/`` (and ``/demo``) serve a single HTML page, ``/static/{name}`` its script and style.

The page (``server/static``: plain HTML, CSS and JavaScript, nothing fetched from another host) drives the
public API from the browser: it compresses an image, reads the stream as it arrives, decodes every complete
layer prefix with ``images:decompress?partial=true``, plots bpp against PSNR next to JPEG and WebP, and plays
a sound decoded at a few layer counts. None of these routes is in the OpenAPI document, and none needs an API
key: the page asks for one when the server has keys, and sends it with its ``/v1`` calls.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
NO_CACHE = {"Cache-Control": "no-cache"}


def _asset(name: str) -> str:
    return resources.files("strata.server.static").joinpath(name).read_text(encoding="utf-8")


@router.get("/")
async def index(request: Request) -> HTMLResponse:
    settings = request.app.state.settings
    page = (_asset("index.html")
            .replace("{{KEYED}}", "true" if settings.auth_enabled else "false")
            .replace("{{MAX_BODY_BYTES}}", str(settings.max_body_bytes)))
    return HTMLResponse(page, headers=NO_CACHE)


@router.get("/demo")
async def demo() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, f"no static file {name!r}")
    return Response(_asset(name), media_type=ASSETS[name], headers=NO_CACHE)
