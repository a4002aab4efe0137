"""The web page at `/`, driven in Debian's Chromium through Playwright against a real server
running efficientnet_lite0 with its real ImageNet weights."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    FilePayload,
    Locator,
    Page,
    ViewportSize,
    expect,
)

from tests.images import jpeg
from tests.servers import Server, run_server

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat"}
NOT_AN_IMAGE = "This file is not an image the server can read."
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 800}
# Chromium logs every non-2xx fetch as a console error; a test that provokes one expects it.
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class Watched:
    """What the page did besides what the test asked: console errors and every request."""

    page: Page
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_clean(self, *expected_statuses: int) -> None:
        """No console errors but the failed loads the test provoked; no request off this host."""
        unexpected = [
            text
            for text in self.errors
            if not ((m := FAILED_LOAD.match(text)) and int(m.group(1)) in expected_statuses)
        ]
        assert unexpected == []
        elsewhere = [
            url
            for url in self.urls
            if urlsplit(url).scheme not in ("blob", "data")
            and urlsplit(url).hostname not in ("127.0.0.1", "localhost")
        ]
        assert elsewhere == []


def open_page(browser: Browser, url: str) -> Watched:
    """The page at `url` in a fresh browser context, watched from its first request."""
    page = browser.new_context(viewport=DESKTOP, locale="en-US").new_page()
    page.set_default_timeout(30_000)
    seen = Watched(page)
    page.on("console", seen.on_console)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    page.on("request", lambda request: seen.urls.append(request.url))
    page.goto(f"{url}/")
    return seen


@pytest.fixture
def watched(browser: Browser, lite_server: Server) -> Iterator[Watched]:
    seen = open_page(browser, lite_server.url)
    seen.page.locator("#model-info").filter(has_text="efficientnet_lite0").wait_for()
    yield seen
    seen.page.context.close()


def payload(name: str, mime_type: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime_type, "buffer": data}


def chelsea() -> FilePayload:
    return payload("chelsea.jpg", "image/jpeg", jpeg("chelsea"))


def card(page: Page, filename: str) -> Locator:
    return page.locator(".card").filter(has=page.locator("figcaption", has_text=filename))


def wait_done(page: Page) -> None:
    """Every card has its answer (cards are aria-busy while classifying)."""
    page.locator(".card").first.wait_for()
    expect(page.locator(".card[aria-busy]")).to_have_count(0, timeout=30_000)


def labels(page: Page, filename: str) -> list[str]:
    return card(page, filename).locator(".predictions .label").all_inner_texts()


def screenshot(page: Page, path: Path, viewport: ViewportSize) -> None:
    page.set_viewport_size(viewport)
    # Readable at every width: nothing wider than the window, so no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    page.screenshot(path=path, full_page=True)


def drop_or_paste(page: Page, event: str, file: FilePayload) -> None:
    """Fire a real paste or drop event carrying the file, as the browser does for a user."""
    page.evaluate(
        """([event, name, type, data]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type }));
          const init = { bubbles: true, cancelable: true };
          const fired = event === "paste"
            ? new ClipboardEvent("paste", { ...init, clipboardData: transfer })
            : new DragEvent("drop", { ...init, dataTransfer: transfer });
          document.querySelector("#drop-zone label").dispatchEvent(fired);
        }""",
        [event, file["name"], file["mimeType"], base64.b64encode(file["buffer"]).decode()],
    )


def test_page_and_its_assets_come_from_the_gateway(lite_server: Server) -> None:
    page = httpx.get(f"{lite_server.url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    wanted = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    fetched = set()
    while wanted:
        path = wanted.pop()
        fetched.add(path)
        asset = httpx.get(f"{lite_server.url}{path}", timeout=10)
        assert asset.status_code == 200, path
        assert not asset.headers["content-type"].startswith("application/json"), path
        if path.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript")
            imports = re.findall(r'from "\./([\w-]+\.js)"', asset.text)
            wanted += [f"/static/{name}" for name in imports if f"/static/{name}" not in fetched]
    assert {"/static/app.js", "/static/page.css", "/static/messages.js"} <= fetched
    for missing in ("/static/nope.js", "/static/..%2Fpyproject.toml", "/static/"):
        response = httpx.get(f"{lite_server.url}{missing}", timeout=10)
        assert response.status_code == 404, missing
        assert response.json()["error"]["code"] == "not_found"


def test_chelsea_shows_a_cat_with_score_bars_and_timings(
    watched: Watched, lite_server: Server, logs: Path
) -> None:
    page = watched.page
    # Record whether a progress indicator was ever shown: classification may be quick.
    page.evaluate(
        """() => new MutationObserver(() => {
          if (document.querySelector(".card progress")) window.sawProgress = true;
        }).observe(document.body, { childList: true, subtree: true })"""
    )
    image = chelsea()
    page.set_input_files("#file", [image])
    wait_done(page)
    assert page.evaluate("window.sawProgress") is True
    shown = labels(page, "chelsea.jpg")
    assert len(shown) == 3  # the page's default k, the API's
    assert CAT_CLASSES & set(shown[:3])

    # The page shows what the API answers for the same image and k.
    api = httpx.post(
        f"{lite_server.url}/v1/classify",
        params={"top_k": 3},
        files={"file": ("chelsea.jpg", image["buffer"], "image/jpeg")},
        timeout=30,
    ).json()
    result = card(page, "chelsea.jpg")
    assert shown == [p["label"] for p in api["predictions"]]
    expected = [f"{p['score'] * 100:.1f}%" for p in api["predictions"]]
    assert result.locator(".predictions .score").all_inner_texts() == expected
    bar = result.locator(".predictions .bar").first.bounding_box()
    fill = result.locator(".predictions .fill").first.bounding_box()
    assert bar is not None
    assert fill is not None
    assert fill["width"] / bar["width"] == pytest.approx(api["predictions"][0]["score"], abs=0.01)

    terms = result.locator(".timings dt").all_inner_texts()
    values = dict(zip(terms, result.locator(".timings dd").all_inner_texts(), strict=True))
    assert values["Model"] == "efficientnet_lite0 v1"
    assert re.fullmatch(r"[\d,]+(\.\d)? ms", values["Server total"])
    assert re.fullmatch(r"[\d,]+(\.\d)? ms", values["Round trip"])
    assert "Inference" in values or values["Batch"] == "cached answer"
    assert page.locator("#results").get_attribute("aria-live") == "polite"
    assert page.locator("#status").inner_text() == "1 image classified."
    screenshot(page, logs / "web-page-cat-desktop.png", DESKTOP)
    screenshot(page, logs / "web-page-cat-phone.png", PHONE)
    watched.assert_clean()


def test_a_text_file_shows_a_sentence_and_the_error_code(watched: Watched) -> None:
    page = watched.page
    page.set_input_files("#file", [payload("notes.txt", "text/plain", b"words, no pixels\n")])
    wait_done(page)
    error = card(page, "notes.txt").locator(".error")
    assert NOT_AN_IMAGE in error.inner_text()
    assert error.locator("code").inner_text() == "not_an_image"
    # Sending the same bytes again cannot help, so no retry button is offered.
    assert card(page, "notes.txt").get_by_role("button").count() == 0
    watched.assert_clean(415)


def test_a_too_large_file_shows_a_sentence_and_the_error_code(watched: Watched) -> None:
    page = watched.page
    oversized = b"\xff" * (20 * 1024 * 1024 + 1)  # one byte over max_upload_bytes
    page.set_input_files("#file", [payload("huge.jpg", "image/jpeg", oversized)])
    wait_done(page)
    error = card(page, "huge.jpg").locator(".error")
    assert "This file is too large for the server." in error.inner_text()
    assert error.locator("code").inner_text() == "payload_too_large"
    watched.assert_clean(413)


def test_several_images_make_a_grid_of_cards(watched: Watched, logs: Path) -> None:
    page = watched.page
    files = [
        chelsea(),
        payload("coffee.jpg", "image/jpeg", jpeg("coffee")),
        payload("rocket.jpg", "image/jpeg", jpeg("rocket")),
        payload("notes.txt", "text/plain", b"words, no pixels\n"),
    ]
    page.set_input_files("#file", files)
    wait_done(page)
    cards = page.locator(".card")
    assert cards.count() == len(files)
    assert CAT_CLASSES & set(labels(page, "chelsea.jpg")[:3])
    assert {"espresso", "cup"} & set(labels(page, "coffee.jpg")[:3])
    assert len(labels(page, "rocket.jpg")) == 3
    assert card(page, "notes.txt").locator(".error code").inner_text() == "not_an_image"
    assert page.locator("#status").inner_text() == "4 images: 3 classified, 1 failed."

    boxes = [box for box in (c.bounding_box() for c in cards.all()) if box is not None]
    assert boxes[0]["y"] == boxes[1]["y"] < boxes[3]["y"]  # several cards to a row
    screenshot(page, logs / "web-page-grid-desktop.png", DESKTOP)
    screenshot(page, logs / "web-page-grid-phone.png", PHONE)
    boxes = [box for box in (c.bounding_box() for c in cards.all()) if box is not None]
    assert len({box["x"] for box in boxes}) == 1  # one column on a phone
    watched.assert_clean(415)


def test_keyboard_alone_reaches_the_file_chooser_and_classifies(watched: Watched) -> None:
    page = watched.page
    # Listening early turns on Chromium's file chooser interception before Enter is pressed
    # (turned on by expect_file_chooser alone, it can come after the key: a flaky test).
    page.on("filechooser", lambda _: None)
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file":
            break
    assert page.evaluate("document.activeElement.id") == "file"
    # The input itself is visually hidden: its label shows where the focus is.
    outline = "getComputedStyle(document.querySelector('label[for=file]')).outlineStyle"
    assert page.evaluate(outline) == "solid"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files([chelsea()])
    wait_done(page)
    assert CAT_CLASSES & set(labels(page, "chelsea.jpg")[:3])
    watched.assert_clean()


@pytest.mark.parametrize("event", ["paste", "drop"])
def test_pasted_and_dropped_images_are_classified(watched: Watched, event: str) -> None:
    page = watched.page
    image = chelsea()
    image["name"] = f"{event}.jpg"
    drop_or_paste(page, event, image)
    wait_done(page)
    assert CAT_CLASSES & set(labels(page, f"{event}.jpg")[:3])
    watched.assert_clean()


def test_behind_an_api_key_the_page_asks_for_it_and_keeps_it_for_the_tab(
    browser: Browser, home: Path, logs: Path
) -> None:
    key = "k-web-5d21"
    with run_server(home, logs, "--model", "efficientnet_lite0", api_keys=key) as guarded:
        seen = open_page(browser, guarded.url)  # the page itself needs no key
        page = seen.page
        info = page.locator("#model-info")
        expect(info).to_have_text("The server needs a valid API key. Error code: unauthorized")
        assert page.locator("#auth").get_attribute("open") is not None

        page.get_by_label("Key sent as").fill(key)
        page.keyboard.press("Tab")  # leaving the field commits it and reloads the models
        expect(info).to_contain_text("efficientnet_lite0")
        page.set_input_files("#file", [chelsea()])
        wait_done(page)
        assert CAT_CLASSES & set(labels(page, "chelsea.jpg")[:3])
        stored = page.evaluate(
            "[Object.values(sessionStorage), localStorage.length, document.cookie]"
        )
        assert stored == [[key], 0, ""]
        seen.assert_clean(401)
        page.context.close()


def test_selections_add_up_k_reruns_and_json_and_curl_can_be_copied(
    watched: Watched, lite_server: Server, tmp_path: Path
) -> None:
    page = watched.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.set_input_files("#file", [chelsea()])
    wait_done(page)
    page.set_input_files("#file", [payload("coffee.jpg", "image/jpeg", jpeg("coffee"))])
    wait_done(page)
    captions = page.locator(".card figcaption").all_inner_texts()
    assert captions == ["coffee.jpg", "chelsea.jpg"]  # newest first, earlier ones kept

    page.locator("#top-k").fill("5")
    page.locator("#top-k").press("Enter")  # a changed k asks again for every card
    expect(card(page, "chelsea.jpg").locator(".predictions li")).to_have_count(5)
    expect(card(page, "coffee.jpg").locator(".predictions li")).to_have_count(5)
    wait_done(page)

    result = card(page, "chelsea.jpg")
    result.locator(".raw summary").click()
    answer = json.loads(result.locator(".raw pre.json").inner_text())
    assert [p["label"] for p in answer["predictions"]] == labels(page, "chelsea.jpg")
    curl = result.locator(".raw pre.curl").inner_text()
    assert curl == f"curl -F 'file=@chelsea.jpg' '{lite_server.url}/v1/classify?top_k=5'"
    result.get_by_role("button", name="Copy curl").click()
    assert page.evaluate("navigator.clipboard.readText()") == curl
    # The copied command works as it is, next to the file.
    (tmp_path / "chelsea.jpg").write_bytes(chelsea()["buffer"])
    ran = subprocess.run(
        ["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert [p["label"] for p in json.loads(ran.stdout)["predictions"]] == labels(
        page, "chelsea.jpg"
    )

    page.get_by_role("button", name="Clear results").click()
    expect(page.locator(".card")).to_have_count(0)
    watched.assert_clean()


def test_random_weights_are_said_on_the_page(browser: Browser, resnet_server: Server) -> None:
    seen = open_page(browser, resnet_server.url)
    page = seen.page
    expect(page.locator("#model-info")).to_contain_text("random weights")
    page.set_input_files("#file", [chelsea()])
    wait_done(page)
    expect(card(page, "chelsea.jpg").locator(".random-weights")).to_be_visible()
    seen.assert_clean()
    page.context.close()
