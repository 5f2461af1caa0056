"""The docs pages, ``/docs`` (Swagger UI) and ``/redoc``, served whole by the server.

FastAPI's own pages load their scripts and fonts from a CDN, so they stay blank where the
server has no internet. These load everything from :data:`ASSETS`: the Swagger UI and Redoc
builds that the ``fastapi-offline`` package ships.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SCHEMA = "/openapi.json"
"""Where the app serves its OpenAPI document, which both pages render."""
ASSETS = "/docs-assets"
"""Where the pages' scripts, stylesheet and icon are served."""
THIS_SERVER_ONLY = "default-src 'self' 'unsafe-inline' data: blob:"
"""The pages' Content-Security-Policy. Redoc's sidebar shows a logo from its vendor's CDN
(hidden when it fails to load); with this the browser does not even ask for it."""

router = APIRouter(include_in_schema=False)


def serve(app: FastAPI) -> None:
    """Serve the docs pages and their assets on ``app``, made with ``openapi_url=SCHEMA`` and
    with ``docs_url`` and ``redoc_url`` off, so that FastAPI's CDN pages take no path."""
    # Checked here, at app creation: a missing asset folder fails the start, not the page.
    assets = StaticFiles(packages=[("fastapi_offline", "static")])
    app.mount(ASSETS, assets, name="docs-assets")
    app.include_router(router)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=SCHEMA,
        title=f"{_title(request)} - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
    )
    page.headers["Content-Security-Policy"] = THIS_SERVER_ONLY
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=SCHEMA,
        title=f"{_title(request)} - ReDoc",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = THIS_SERVER_ONLY
    return page


def _title(request: Request) -> str:
    app: FastAPI = request.app
    return app.title
