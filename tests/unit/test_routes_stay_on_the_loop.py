"""Every route runs on the event loop: FastAPI hands a plain `def` endpoint or dependency
to its thread pool, a round trip through another thread on every request."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from resnet_serve.api.app import create_app
from resnet_serve.api.broker.redis_broker import RedisBroker
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import load_settings


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, inside included routers too (FastAPI keeps them as they were
    included, under `original_router`)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(router.routes)


def _calls(dependant: Dependant) -> Iterator[object]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _on_the_loop(call: object) -> bool:
    method = call if inspect.isroutine(call) else getattr(call, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def test_no_endpoint_or_dependency_runs_in_the_thread_pool() -> None:
    settings, metrics = load_settings(), Metrics()
    app = create_app(settings, RedisBroker(settings, metrics), metrics)  # connects to nothing
    routes = list(_api_routes(app.routes))
    assert len(routes) > 20
    threaded = [
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _on_the_loop(call)
    ]
    assert threaded == []
