"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven through selenium.

:func:`start_chromium` starts it with the flags that work here (no sandbox, no GPU, no QUIC,
no background networking, a fresh profile directory) and the browser console log enabled, or
skips the test naming the missing package. :class:`Pages` is what a test does on each page:
keep a full-page screenshot under :func:`screenshot_dir`, run the accessibility checks of
:mod:`tests.ui.a11y` on the DOM the browser built (contrast from the computed styles of the
CSS we ship) and collect console errors (a CSP refusal would show there). Blocking: call from a
worker thread while the servers run on the event loop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.ui.a11y import COMPUTED_TEXT_JS, computed_contrast_problems, page_problems

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
WIDTH = 1280


def screenshot_dir(test_name: str) -> Path:
    """``$QUAYSIDE_UI_SCREENSHOTS/<test>`` or ``build/ui-screenshots/<test>`` in the repo."""
    base = os.environ.get("QUAYSIDE_UI_SCREENSHOTS") or str(
        Path(__file__).parents[2] / "build" / "ui-screenshots"
    )
    out = Path(base) / test_name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def start_chromium(profile: Path) -> webdriver.Chrome:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (make sysdeps)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver, log_output=str(profile.parent / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=opts)
    browser.set_page_load_timeout(30)
    return browser


class Pages:
    """Per-page checks and screenshots for one scenario (see the module docstring)."""

    def __init__(self, browser: webdriver.Chrome, shots: Path) -> None:
        self.browser = browser
        self.shots = shots
        self.taken: list[Path] = []
        self.problems: dict[str, list[str]] = {}

    def check(self, name: str) -> None:
        """Screenshot the whole page as ``<name>.png`` and record what fails on it."""
        b = self.browser
        height = int(b.execute_script("return document.documentElement.scrollHeight"))
        b.set_window_size(WIDTH, max(600, min(height + 140, 4000)))
        path = self.shots / f"{name}.png"
        b.save_screenshot(str(path))
        self.taken.append(path)
        found = page_problems(b.page_source)
        found += computed_contrast_problems(b.execute_script(COMPUTED_TEXT_JS))
        found += [
            f"console: {e['message']}"
            for e in b.get_log("browser")
            if e.get("level") == "SEVERE" and "favicon.ico" not in e.get("message", "")
        ]
        if b.execute_script("return document.styleSheets.length") < 1:
            found.append("no stylesheet applied")
        if found:
            self.problems[name] = found

    def header_background(self) -> Any:
        return self.browser.execute_script(
            "return getComputedStyle(document.querySelector('header')).backgroundColor"
        )
