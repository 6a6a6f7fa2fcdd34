"""The API documentation works offline: ``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from the
service itself, so in a real browser with every request to another host blocked they still render every operation
of the OpenAPI document. (Issue 19: /docs was a blank page without a network, its files came from a CDN.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service.api.routes.docs import ASSETS
from tests.live import serve

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000


def operations(document: dict) -> list[tuple[str, str]]:
    methods = {"get", "post", "put", "delete", "patch"}
    return [(m.upper(), path) for path, ops in document["paths"].items() for m in ops if m in methods]


def test_docs_pages_reference_only_this_service(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "http://" not in html.text and "https://" not in html.text, page  # no CDN, no web fonts
        assert "default-src 'self'" in html.headers["content-security-policy"], page
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100_000, name
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404
    assert client.get("/docs/assets/nothing.js").json()["detail"]


def test_assets_come_from_the_installed_package():
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= set(ASSETS)
    assert all(path.is_file() for path in ASSETS.values())


# --- in a real browser, offline ------------------------------------------------------------------------------------

if CHROMIUM.is_file():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
else:
    sync_api = None


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture(scope="module")
def offline_page(server):
    """A page whose every request to a host other than the service's is aborted and recorded."""
    if sync_api is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y --no-install-recommends chromium)")
    own = urlsplit(server).netloc
    blocked: list[str] = []

    def gate(route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        context = browser.new_context()
        context.route("**/*", gate)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        yield page, blocked, errors
        browser.close()


def test_swagger_ui_shows_every_operation_with_outside_hosts_blocked(offline_page, server):
    page, blocked, errors = offline_page
    blocked.clear()
    errors.clear()
    expected = operations(httpx.get(f"{server}/openapi.json").json())
    page.goto(f"{server}/docs")
    blocks = page.locator(".opblock")
    blocks.nth(len(expected) - 1).wait_for(timeout=TIMEOUT_MS)
    assert blocks.count() == len(expected)
    shown = {
        (page_method.strip(), page_path.strip().replace("\u200b", ""))
        for page_method, page_path in zip(
            page.locator(".opblock-summary-method").all_inner_texts(),
            page.locator(".opblock-summary-path").all_inner_texts(),
            strict=True,
        )
    }
    assert shown == set(expected)
    assert page.title().endswith("Swagger UI")
    assert blocked == [] and errors == []


def test_redoc_shows_every_operation_with_outside_hosts_blocked(offline_page, server):
    page, blocked, errors = offline_page
    blocked.clear()
    errors.clear()
    expected = operations(httpx.get(f"{server}/openapi.json").json())
    page.goto(f"{server}/redoc")
    sections = page.locator("[data-section-id^='operation/']")
    sections.nth(len(expected) - 1).wait_for(timeout=TIMEOUT_MS)
    assert sections.count() == len(expected)
    assert blocked == []
    # ReDoc's menu links its vendor's logo from a CDN: the page's Content-Security-Policy refuses it, nothing else
    assert all("logo-mini.svg" in error and "Content Security Policy" in error for error in errors), errors
