"""Swagger UI 5 at /docs and ReDoc at /redoc, from assets shipped on PyPI
(`fastapi-offline`: swagger-ui-dist 5 and redoc 2), not a CDN, so the API documentation
works on offline and air-gapped machines and reads FastAPI's OpenAPI 3.1."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

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


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document, served by a route like every other (so its requests are
    counted under their own route label, not as unmatched)."""
    return JSONResponse(request.app.openapi())


class DocsAssets(StaticFiles):
    """The bundled assets; ReDoc's bundle with its logo pointed at ours, so nothing is
    fetched from elsewhere."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == "redoc.standalone.js":
            return Response(_redoc_js(), media_type="text/javascript; charset=utf-8")
        return await super().get_response(path, scope)


def install_docs(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, DocsAssets(directory=assets_dir()), name="docs-assets")
