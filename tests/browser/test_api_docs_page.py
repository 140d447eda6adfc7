"""/docs in a real headless Chromium that cannot reach any host but localhost (issue 13): the
page renders the control plane's operations list, and every request the browser starts goes to
the control plane (Swagger UI's files are served by it, not by a CDN)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import Browser, trusted_pins
from tests.integration.control_plane_flow import closed_address, control_plane
from tests.procs import free_port

pytestmark = pytest.mark.integration

NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    base = tmp_path_factory.mktemp("api-docs")
    port = free_port()
    with control_plane(base, port, closed_address()):
        yield port, base / "pki"


@pytest.fixture(scope="module")
def offline_browser(
    cp: tuple[int, Path], browser_factory: type[Browser], screenshots: Path
) -> Iterator[Browser]:
    port, pki = cp
    chromium = browser_factory(trusted_pins(pki), screenshots, offline=True)
    chromium.base = f"https://localhost:{port}"
    try:
        yield chromium
    finally:
        chromium.close()


def _operations(browser: Browser, limit: float = 20.0) -> list[str]:
    """The operations Swagger UI lists ("GET /api/am/publisher/v4/apis", ...), once drawn."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + limit
    while True:
        found = [
            " ".join(element.text.split())
            for element in browser.driver.find_elements(By.CSS_SELECTOR, ".opblock-summary")
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_docs_renders_its_operations_with_no_request_leaving_the_machine(
    offline_browser: Browser,
) -> None:
    browser = offline_browser
    browser.requested()  # start the request log here
    browser.open("/docs")
    operations = _operations(browser)
    browser.screenshot("api-docs")
    assert any("/api/am/publisher/v4/apis" in op and op.startswith("GET") for op in operations), (
        f"no operations drawn; page text: {browser.text[:500]!r}"
    )
    assert any("/oauth2/token" in op for op in operations), operations
    assert len(operations) > 50, len(operations)
    assert "wsgate control plane" in browser.text

    requested = browser.requested()
    assert f"{browser.base}/docs/assets/swagger-ui-bundle.js" in requested, requested
    assert f"{browser.base}/openapi.json" in requested, requested
    # data:, blob: and chrome:// (the browser's own pages) never leave the machine.
    network = [url for url in requested if url.split(":", 1)[0] in NETWORK_SCHEMES]
    elsewhere = [url for url in network if not url.startswith(browser.base + "/")]
    assert elsewhere == [], f"/docs made requests off this machine: {elsewhere}"
    assert browser.console_errors() == []
