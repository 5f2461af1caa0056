"""``/docs`` and ``/redoc`` render in a real headless Chromium that may reach only the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

from .server import ServerProcess

OPERATIONS = ["/api/health", "/api/tenants/{tenant}/bundle", "/api/tenants/{tenant}/snapshots"]
RENDERED = 30_000
"""Milliseconds a page has to show its operations."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(Path(tmp_path_factory.mktemp("docs")), admin_token="admin").start()
    try:
        yield process
    finally:
        process.stop()


def offline_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page that may reach only 127.0.0.1, and the list of every other URL it asked for."""
    page = browser.new_page()
    refused: list[str] = []

    def only_this_machine(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", only_this_machine)
    return page, refused


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_page_names_nothing_outside_the_server(server: ServerProcess, path: str) -> None:
    html = httpx.get(server.url + path).raise_for_status().text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", html)
    assert urls, html
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url


def test_swagger_ui_lists_the_operations_offline(server: ServerProcess, browser: Browser) -> None:
    page, refused = offline_page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=RENDERED)
    listed = page.locator(".opblock-summary-path").all_inner_texts()
    shown = [path.replace("\u200b", "") for path in listed]
    for operation in OPERATIONS:
        assert operation in shown
    assert refused == []
    assert errors == []


def test_redoc_lists_the_operations_offline(server: ServerProcess, browser: Browser) -> None:
    page, refused = offline_page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id^='operation/']", timeout=RENDERED)
    text = page.locator("body").inner_text()
    for operation in OPERATIONS:
        assert operation in text
    assert refused == []
    assert errors == []
