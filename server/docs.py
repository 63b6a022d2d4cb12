"""The API's documentation: the OpenAPI document and the interactive page that shows it.

FastAPI's default ``/docs`` and ``/redoc`` pages load their JavaScript and CSS from a CDN, so
they are blank on a machine without internet access. Here ``/docs`` is Swagger UI with its
assets from the ``swagger-ui-bundle`` package, served under ``/docs/assets``; ``/redoc`` is
off. The OpenAPI document stays at ``/openapi.json``; it declares the ``X-API-Key`` security
scheme only when the server has keys (:func:`install` with ``keyed``), since without keys no
route needs one.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS = "/docs"
ASSETS = "/docs/assets"


def install(app: FastAPI, keyed: bool) -> None:
    """Serve Swagger UI at ``/docs`` from local assets (call on an app made with ``docs_url=None``), and
    drop the API-key security declarations from the OpenAPI document unless ``keyed``."""
    make_schema = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = make_schema()  # FastAPI's, cached in app.openapi_schema
            if not keyed:
                _drop_security(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = f"{DOCS}/oauth2-redirect"

    @app.get(DOCS, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
        )

    @app.get(redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _drop_security(schema: dict) -> None:
    """Remove every operation's ``security`` and the security schemes (in place)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    components = schema.get("components", {})
    components.pop("securitySchemes", None)
    if not components:
        schema.pop("components", None)
