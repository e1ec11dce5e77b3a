"""The web UI in a real browser: headless Chromium through selenium, against the real origin and
edge applications on loopback ports.

Each page visited is screenshotted (full page, PNG) under ``build/ui-screenshots/<test>/`` (or
``$QUAYSIDE_UI_SCREENSHOTS``; the directory is printed) and must pass the accessibility checks
of :mod:`tests.ui.a11y` on the DOM Chromium built, with text contrast computed from the styles
the browser applied, and show no console error (a CSP refusal would be one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.fixtures import ImageFactory
from harness.images import KiB
from harness.registry import DockerRegistry
from tests.edge.conftest import MakeEdge, push
from tests.ui.browser import Pages, screenshot_dir, start_chromium
from tests.ui.conftest import UiOriginFactory
from tests.ui.content import USERS, Published

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    b = start_chromium(profile)
    try:
        yield b
    finally:
        b.quit()


def _sign_in(b: webdriver.Chrome, user: str, password: str) -> None:
    b.find_element(By.ID, "username").clear()
    b.find_element(By.ID, "username").send_keys(user)
    b.find_element(By.ID, "password").send_keys(password)
    _follow(b, By.ID, "sign-in")


def _follow(b: webdriver.Chrome, by: str, value: str) -> None:
    """Click what navigates, and wait until the new page has loaded: a click does not wait for
    the answer, so the URL and page read next could still be the old page's (seen in CI).

    The old page is marked with a window property (a new document does not have it); its
    elements are never touched again: asking chromedriver about an element while its document
    is being replaced can fail with "Node with given id does not belong to the document"
    instead of the stale-element error selenium's ``staleness_of`` expects (seen in CI)."""
    b.execute_script("window.quaysideOldPage = true")
    b.find_element(by, value).click()
    WebDriverWait(b, 15, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.quaysideOldPage === undefined && document.readyState === 'complete'"
        )
    )


def origin_scenario(b: webdriver.Chrome, base: str, pages: Pages, p: Published) -> dict[str, str]:
    """Sign in, browse to a tag, read its verdict; returns what was seen."""
    seen: dict[str, str] = {}
    b.delete_all_cookies()
    b.get(base + "/ui/")
    assert "public/base" in b.page_source and "team/app" not in b.page_source
    seen["header"] = pages.header_background()
    pages.check("01-repositories-signed-out")

    _follow(b, By.LINK_TEXT, "Sign in")
    assert "/ui/login" in b.current_url
    pages.check("02-sign-in")
    _sign_in(b, "alice", "not-her-password")
    seen["error"] = b.find_element(By.ID, "login-error").text
    pages.check("03-sign-in-wrong-password")
    _sign_in(b, "alice", USERS["alice"])
    assert b.current_url.endswith("/ui/"), b.current_url
    assert "Signed in as alice" in b.find_element(By.TAG_NAME, "header").text
    seen["document.cookie"] = b.execute_script("return document.cookie")
    seen["session_httponly"] = str(
        [c.get("httpOnly") for c in b.get_cookies() if c["name"] == "quayside_ui"]
    )
    pages.check("04-repositories")

    _follow(b, By.LINK_TEXT, "team/app")
    pages.check("05-repository-tags")
    _follow(b, By.LINK_TEXT, "1.0")
    assert b.find_element(By.TAG_NAME, "h1").text == "team/app:1.0"
    seen["verdict"] = b.find_element(By.ID, "signature-verdict").text
    seen["scan"] = b.find_element(By.ID, "scan-verdict").text
    seen["signatures"] = b.find_element(By.ID, "signatures").text
    seen["layers"] = b.find_element(By.ID, "layers").text
    pages.check("06-tag")

    _follow(b, By.LINK_TEXT, "team/app")
    _follow(b, By.LINK_TEXT, "multi")
    seen["platforms"] = b.find_element(By.ID, "platforms").text
    pages.check("07-index")
    _follow(b, By.CSS_SELECTOR, "#platforms tbody tr a")
    pages.check("08-index-child")
    _follow(b, By.PARTIAL_LINK_TEXT, "Audit trail")
    seen["audit"] = b.find_element(By.ID, "audit").text
    pages.check("09-audit")

    _follow(b, By.CSS_SELECTOR, "form[action='/ui/logout'] button")
    assert "/ui/login" in b.current_url
    b.get(base + "/ui/r/team/app/")
    seen["after_sign_out"] = b.current_url
    pages.check("10-signed-out")
    return seen


async def test_sign_in_browse_to_a_tag_and_see_its_signature_verdict_in_chromium(
    browser: webdriver.Chrome, ui_origin: UiOriginFactory
) -> None:
    origin = await ui_origin()
    p = origin.published
    assert p is not None
    shots = screenshot_dir("origin")
    print(f"UI screenshots: {shots}")
    pages = Pages(browser, shots)
    seen = await asyncio.to_thread(origin_scenario, browser, origin.base_url, pages, p)

    assert seen["verdict"] == "not configured"
    assert seen["scan"] == "not configured"
    assert "cosign signature" in seen["signatures"] and "notation signature" in seen["signatures"]
    assert p.app_layers[0][0][:19] in seen["layers"]
    assert "linux/amd64" in seen["platforms"] and "linux/arm64/v8" in seen["platforms"]
    assert "user:alice" in seen["audit"]
    assert seen["error"] == "Wrong user name or password."
    assert seen["document.cookie"] == ""  # HttpOnly: scripts cannot read the session
    assert seen["session_httponly"] == "[True]"
    assert seen["header"] == "rgb(11, 61, 92)"  # our stylesheet was applied (CSP let it)
    assert "/ui/login?next=" in seen["after_sign_out"]
    assert pages.problems == {}
    assert len(pages.taken) == 10
    for shot in pages.taken:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def edge_scenario(b: webdriver.Chrome, url: str, pages: Pages) -> dict[str, str]:
    b.get(url)
    seen = {
        "blob": b.find_element(By.ID, "hit-ratio-blob").text,
        "h1": b.find_element(By.TAG_NAME, "h1").text,
    }
    pages.check("edge-status")
    return seen


async def test_the_edge_status_page_in_chromium(
    browser: webdriver.Chrome,
    docker_registry: DockerRegistry,
    image_factory: ImageFactory,
    make_edge: MakeEdge,
) -> None:
    img = image_factory.image(layer_sizes=(64 * KiB,))
    await push(docker_registry.url, "team/app", "v1", img)
    e = await make_edge({"local": docker_registry.url})
    for _ in range(4):  # one miss, three hits
        resp = await e.client.get(f"/v2/team/app/blobs/{img.layers[0].digest}")
        await resp.read()
    shots = screenshot_dir("edge")
    print(f"UI screenshots: {shots}")
    pages = Pages(browser, shots)
    url = str(e.client.make_url("/ui/"))
    seen = await asyncio.to_thread(edge_scenario, browser, url, pages)
    assert seen == {"blob": "75.0%", "h1": "Edge node status"}
    assert pages.problems == {}
    assert len(pages.taken) == 1
