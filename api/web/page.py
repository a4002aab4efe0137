"""The web page at `/`: one HTML file and its assets, shipped as package data in api/web/static.

Everything the page needs comes from this gateway; the Content-Security-Policy makes the
browser refuse anything else, so the page works offline and leaks nothing to third parties.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import PurePath

from fastapi import APIRouter
from fastapi.responses import Response

from resnet_serve.shared.errors import NotFound

router = APIRouter(include_in_schema=False)

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# blob: for the previews of the chosen files, which never leave the browser until sent.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files, no build step and so no hashed names: revalidate on every load.
    "Cache-Control": "no-cache",
}


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Every file in api/web/static by name, read once (a few tens of KB)."""
    assets = {}
    for entry in files("resnet_serve.api.web").joinpath("static").iterdir():
        media_type = _MEDIA_TYPES.get(PurePath(entry.name).suffix)
        if media_type is not None:
            assets[entry.name] = (entry.read_bytes(), media_type)
    return assets


def _serve(name: str) -> Response:
    asset = _assets().get(name)
    if asset is None:
        raise NotFound(f"no such file: /static/{name}")
    body, media_type = asset
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/")
async def page() -> Response:
    """Try the classifier in a browser: drop, choose or paste images."""
    return _serve("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _serve(name)
