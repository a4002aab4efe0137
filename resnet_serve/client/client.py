"""Python client for resnet-serve's /v1 API, sync (`Client`) and async (`AsyncClient`).

    with Client("http://127.0.0.1:8000") as client:
        best = client.classify(Path("cat.jpg"), top_k=3).predictions[0]

Retries, from two places on purpose:
- an answer of 503 (queue full, not ready) or 429 is retried by tenacity, with
  exponential backoff and jitter but never sooner than the server's Retry-After; one
  policy object drives the sync and the async client alike;
- a connection that fails before any request went out (refused, DNS) is retried by
  httpx's transport (`retries=`), which covers connect errors only, so it never sends
  a request twice that the server may have run. 504 (deadline) is not retried: the
  server already gave the request its whole time budget.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter
from tenacity import AsyncRetrying, Retrying

from resnet_serve.client.models import (
    BatchItem,
    Classification,
    Health,
    ModelSummary,
    ServeClientError,
)
from resnet_serve.client.retry import DEFAULT_RETRY, RetryPolicy

Image = bytes | str | os.PathLike[str]
T = TypeVar("T")
_MODELS = TypeAdapter(list[ModelSummary])
log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # (model, version): random weights said once
_ITEMS = TypeAdapter(list[BatchItem])


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One API operation, independent of how it is sent (sync or async)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    options: dict[str, Any] = field(default_factory=dict)


def _read(image: Image) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


def _params(top_k: int, model: str | None) -> dict[str, Any]:
    return {"top_k": top_k} | ({"model": model} if model else {})


def _classification(response: httpx.Response) -> Classification:
    result = Classification.model_validate_json(response.content)
    if result.weights == "random" and (result.model, result.version) not in _warned:
        _warned.add((result.model, result.version))
        log.warning(
            "%s version %s was built from RANDOM weights: its predictions are meaningless",
            result.model,
            result.version,
        )
    return result


def _classify(image: Image, top_k: int, model: str | None) -> _Call[Classification]:
    return _Call(
        "POST",
        "/v1/classify",
        _classification,
        {
            "params": _params(top_k, model),
            "content": _read(image)[1],
            "headers": {"content-type": "application/octet-stream"},
        },
    )


def _classify_batch(
    images: Iterable[Image], top_k: int, model: str | None
) -> _Call[list[BatchItem]]:
    files = [("file", (*_read(image), "application/octet-stream")) for image in images]
    return _Call(
        "POST",
        "/v1/classify/batch",
        lambda response: _ITEMS.validate_python(response.json()["results"]),
        {"params": _params(top_k, model), "files": files},
    )


_LIST_MODELS = _Call("GET", "/v1/models", lambda response: _MODELS.validate_json(response.content))


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ServeClientError.from_response(response)
    return response


def _unanswered(error: httpx.TransportError, url: httpx.URL) -> ServeClientError:
    code = "timeout" if isinstance(error, httpx.TimeoutException) else "unreachable"
    return ServeClientError(0, code, f"{url}: {error or type(error).__name__}")


def _options(url: str, timeout_s: float, api_key: str | None) -> dict[str, Any]:
    return {
        "base_url": url.rstrip("/"),
        "timeout": httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
    }


def _health(live: httpx.Response, ready: httpx.Response) -> Health:
    body: Mapping[str, Any] = ready.json() if ready.status_code == 200 else {}
    return Health(
        live=live.status_code == 200,
        ready=ready.status_code == 200,
        models=[ModelSummary.model_validate(m) for m in body.get("models", [])],
    )


class Client:
    """Blocking client; safe to share between threads (httpx.Client is)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        api_key: str | None = None,
        connect_retries: int = 2,
    ) -> None:
        transport = httpx.HTTPTransport(retries=connect_retries)
        self._http = httpx.Client(transport=transport, **_options(url, timeout_s, api_key))
        self._retry = retry

    def _run(self, call: _Call[T]) -> T:
        for attempt in Retrying(**self._retry.tenacity()):
            with attempt:
                try:
                    response = self._http.request(call.method, call.path, **call.options)
                except httpx.TransportError as error:
                    raise _unanswered(error, self._http.base_url) from error
                return call.parse(_checked(response))
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def classify(self, image: Image, *, top_k: int = 3, model: str | None = None) -> Classification:
        """The top-k labels of one image (bytes, or a file path)."""
        return self._run(_classify(image, top_k, model))

    def classify_batch(
        self, images: Iterable[Image], *, top_k: int = 3, model: str | None = None
    ) -> list[BatchItem]:
        """One result or one error per image, in order, in one request."""
        return self._run(_classify_batch(images, top_k, model))

    def models(self) -> list[ModelSummary]:
        return self._run(_LIST_MODELS)

    def health(self) -> Health:
        """Liveness and readiness as probes see them: asked once, never retried; a
        server that does not answer is neither."""
        try:
            return _health(self._http.get("/healthz"), self._http.get("/readyz"))
        except httpx.TransportError:
            return Health(live=False, ready=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The same API for asyncio code; one instance per event loop."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        api_key: str | None = None,
        connect_retries: int = 2,
    ) -> None:
        transport = httpx.AsyncHTTPTransport(retries=connect_retries)
        self._http = httpx.AsyncClient(transport=transport, **_options(url, timeout_s, api_key))
        self._retry = retry

    async def _run(self, call: _Call[T]) -> T:
        async for attempt in AsyncRetrying(**self._retry.tenacity()):
            with attempt:
                try:
                    response = await self._http.request(call.method, call.path, **call.options)
                except httpx.TransportError as error:
                    raise _unanswered(error, self._http.base_url) from error
                return call.parse(_checked(response))
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def classify(
        self, image: Image, *, top_k: int = 3, model: str | None = None
    ) -> Classification:
        return await self._run(_classify(image, top_k, model))

    async def classify_batch(
        self, images: Iterable[Image], *, top_k: int = 3, model: str | None = None
    ) -> list[BatchItem]:
        return await self._run(_classify_batch(images, top_k, model))

    async def models(self) -> list[ModelSummary]:
        return await self._run(_LIST_MODELS)

    async def health(self) -> Health:
        try:
            return _health(await self._http.get("/healthz"), await self._http.get("/readyz"))
        except httpx.TransportError:
            return Health(live=False, ready=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
