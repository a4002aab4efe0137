"""Swagger UI 5 at /docs and ReDoc at /redoc, from assets shipped on PyPI
(`fastapi-offline`: swagger-ui-dist 5 and redoc 2), not a CDN, so the API documentation
works on offline and air-gapped machines and reads FastAPI's OpenAPI 3.1."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
TITLE = "resnet-serve API"
# ReDoc's sidebar shows Redocly's logo from their CDN; the page points it at ours instead.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,  # offline: the system fonts
    )


@cache
def _redoc_js() -> bytes:
    script = (assets_dir() / "redoc.standalone.js").read_bytes()
    return script.replace(REDOC_LOGO, f"{ASSETS}/favicon.png".encode())


@router.get(f"{ASSETS}/redoc.standalone.js")
async def redoc_js() -> Response:
    """ReDoc's bundle, nothing fetched from elsewhere (matched before the assets mount)."""
    return Response(_redoc_js(), media_type="text/javascript; charset=utf-8")


def install_docs(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
