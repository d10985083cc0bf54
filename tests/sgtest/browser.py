"""Headless Debian Chromium driven by Playwright (see ../shared/SERVICES.md for the flags)."""

from __future__ import annotations

import contextlib
import os
import tempfile

from .services import require_chromium

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium_page(viewport=(1280, 800), failure_screenshot: str | None = None):
    """A fresh headless Chromium (its own profile dir) and one page; closed on exit.

    With ``failure_screenshot`` (a PNG path), an exception inside the block saves what the page
    showed at that moment before it propagates.
    """
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sg-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            try:
                yield page
            except Exception:
                if failure_screenshot:
                    page.screenshot(path=failure_screenshot, full_page=True)
                raise
        finally:
            context.close()


def screenshot(page, artifacts_dir: str, name: str) -> str:
    """Save a full-page PNG under the artifacts dir and return its path."""
    path = os.path.join(artifacts_dir, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path


def hub_login(page, hub_url: str, username: str, password: str):
    """Log in through the hub's own login form, as a person would."""
    page.goto(f"{hub_url}/hub/login")
    page.fill("#username_input", username)
    page.fill("#password_input", password)
    page.click("#login_submit")
