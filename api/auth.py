"""Optional API-key auth (`Authorization: Bearer <key>`), as plain ASGI middleware.

Keys are compared as SHA-256 digests with `hmac.compare_digest` against every configured
key, so neither timing nor the answer tells which part of a guess was wrong.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from resnet_serve.shared.errors import error_body
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings

UNAUTHORIZED = "a valid API key is required: send 'Authorization: Bearer <key>'"


def load_api_keys(settings: Settings) -> list[str]:
    """Keys from the setting (comma-separated) and the file (one per line, # comments)."""
    keys = []
    if settings.api_keys is not None:
        keys += settings.api_keys.get_secret_value().split(",")
    if settings.api_keys_file is not None:
        for line in Path(settings.api_keys_file).read_text().splitlines():
            keys.append(line.split("#", 1)[0])
    return [key.strip() for key in keys if key.strip()]


class ApiKeyAuth:
    def __init__(
        self, app: ASGIApp, keys: list[str], exempt_paths: list[str], metrics: Metrics
    ) -> None:
        self.app = app
        self.keys = ApiKeys(keys)
        self.exempt_paths = exempt_paths
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        self.metrics.errors.labels("unauthorized").inc()
        request_id = scope.get("state", {}).get("request_id")
        # KServe v2 clients expect the protocol's own error shape.
        body = (
            {"error": UNAUTHORIZED}
            if scope["path"].startswith("/v2/")
            else error_body("unauthorized", UNAUTHORIZED, request_id)
        )
        response = JSONResponse(
            body,
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _exempt(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.exempt_paths)

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return self.keys.bearer(header)


class ApiKeys:
    """The configured keys, as digests; shared by HTTP and gRPC."""

    def __init__(self, keys: list[str]) -> None:
        self.digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def bearer(self, authorization: str) -> bool:
        """Whether an `Authorization` value is `Bearer <a configured key>`."""
        scheme, _, offered = authorization.partition(" ")
        return self.matches(offered) and scheme.lower() == "bearer"

    def matches(self, offered: str) -> bool:
        digest = hashlib.sha256(offered.strip().encode()).digest()
        # Compare against every key (no early exit): the time taken does not depend on
        # which key, if any, matched.
        matched = False
        for key in self.digests:
            matched |= hmac.compare_digest(digest, key)
        return matched
