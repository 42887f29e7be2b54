"""An operator in headless Debian Chromium, logged in to the admin; it notes what a page should never do."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
# Screenshots of the browser tests.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Flags that keep Chromium from calling home on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class OperatorPage:
    page: object  # playwright's Page
    problems: list[str] = field(default_factory=list)  # console errors and answers of 400 or more
    foreign: list[str] = field(default_factory=list)  # requests that left this machine


@contextmanager
def browser_page(width: int = 1400) -> Iterator[OperatorPage]:
    """A blank page in headless Chromium, watched for errors and for requests that leave this machine."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        watched = OperatorPage(page)
        page.on("console", lambda message: watched.problems.append(message.text) if message.type == "error" else None)
        page.on(
            "response",
            lambda response: (
                watched.problems.append(f"{response.status} {response.url}") if response.status >= 400 else None
            ),
        )
        page.on(
            "request",
            lambda request: (
                watched.foreign.append(request.url)
                if urlsplit(request.url).hostname not in ("127.0.0.1", "localhost")
                else None
            ),
        )
        try:
            yield watched
        finally:
            browser.close()


@contextmanager
def operator_page(
    url: str, username: str, password: str, width: int = 1400, *, code: str = "", wait_for: str | None = None
) -> Iterator[OperatorPage]:
    """A page at the admin `url`, through its login form (with a two-factor `code` when given), once at `wait_for`
    (by default `url`)."""
    with browser_page(width) as watched:
        page = watched.page
        page.goto(url)
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        if code:
            page.fill("#id_otp_token", code)
        page.click("input[type=submit]")
        page.wait_for_url(wait_for or url)
        yield watched
