"""/docs (Swagger UI 5) and /redoc (ReDoc 2) render FastAPI's OpenAPI 3.1 document in a
real browser, from the gateway's own assets: no CDN, so they work offline."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.servers import Server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Console errors and uncaught exceptions; every URL the page requested."""
    errors: list[str] = []
    urls: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: urls.append(r.url))
    return errors, urls


def off_host(urls: list[str]) -> list[str]:
    return [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "blob")
        and urlsplit(u).hostname not in ("127.0.0.1", "localhost")
    ]


def test_swagger_ui_renders_operations_and_tries_one(page: Page, lite_server: Server) -> None:
    errors, urls = watch(page)
    page.goto(f"{lite_server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("resnet-serve")
    assert "Unable to render" not in page.content()
    classify = page.locator(".opblock-summary-description", has_text="Classify one image")
    expect(classify.first).to_be_visible()
    models = page.locator("#operations-operations-models_v1_models_get")
    if models.count() == 0:  # operation ids follow FastAPI's naming; find it by summary
        models = page.locator(".opblock-get").filter(
            has=page.locator(".opblock-summary-path", has_text="/v1/models")
        )
    assert models.count() == 1  # listed once, under one tag
    models.first.locator(".opblock-summary").click()
    models.first.get_by_role("button", name="Try it out").click()
    models.first.get_by_role("button", name="Execute").click()
    status = models.first.locator(".live-responses-table .response .response-col_status")
    expect(status.first).to_have_text("200", timeout=30_000)
    body = models.first.locator(".live-responses-table .response-col_description pre")
    expect(body.first).to_contain_text("efficientnet_lite0")
    assert errors == []
    assert off_host(urls) == []


def test_redoc_renders_operations(page: Page, lite_server: Server) -> None:
    errors, urls = watch(page)
    page.goto(f"{lite_server.url}/redoc")
    expect(page.get_by_role("heading", name="Classify one image").first).to_be_visible()
    expect(page.get_by_text("Model metadata").first).to_be_attached()
    assert errors == []
    assert off_host(urls) == []


def test_docs_assets_are_packaged_and_counted_under_their_mount(lite_server: Server) -> None:
    for path in ("/docs", "/redoc"):
        answer = httpx.get(f"{lite_server.url}{path}", timeout=10)
        assert answer.status_code == 200
        assert "cdn" not in answer.text
    for asset in ("swagger-ui-bundle.js", "redoc.standalone.js"):
        answer = httpx.get(f"{lite_server.url}/docs-assets/{asset}", timeout=10)
        assert answer.status_code == 200
        assert b"cdn.redoc.ly" not in answer.content
    assert httpx.get(f"{lite_server.url}/openapi.json", timeout=10).status_code == 200
    metrics = httpx.get(f"{lite_server.url}/metrics", timeout=10).text
    assert 'route="/docs-assets/{path}",status="200"' in metrics
    assert 'route="/docs-assets/redoc.standalone.js"' not in metrics
    assert 'route="/openapi.json",status="200"' in metrics
