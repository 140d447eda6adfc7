"""/docs is served without any other host: the page, and every file it names, come from the
control plane (issue 13: the OpenAPI page was blank offline)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from wsgate_common.api_docs import ASSETS_PATH


def _referenced(html: str) -> list[str]:
    """Every URL the page itself names in ``src``/``href`` or as a quoted URL in its script."""
    found = re.findall(r'(?:src|href)="([^"]+)"', html)
    found += re.findall(r"""['"]((?:https?:)?//[^'"]+)['"]""", html)
    found += re.findall(r"url: '([^']+)'", html)
    return found


def test_docs_page_names_only_local_files(client: TestClient) -> None:
    client.auth = None
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = _referenced(page.text)
    assert f"{ASSETS_PATH}/swagger-ui-bundle.js" in references, references
    assert f"{ASSETS_PATH}/swagger-ui.css" in references, references
    assert "/openapi.json" in references, references
    assert [r for r in references if not r.startswith("/")] == [], references
    assert "cdn" not in page.text.lower() and "fastapi.tiangolo.com" not in page.text
    assert '"validatorUrl": null' in page.text  # no badge from the online validator
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy


def test_every_file_the_page_names_is_served(client: TestClient) -> None:
    client.auth = None
    for url in _referenced(client.get("/docs").text):
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 100, url
    script = client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"]
    assert "SwaggerUIBundle" in script.text


def test_redoc_is_not_served(client: TestClient) -> None:
    client.auth = None
    assert client.get("/redoc").status_code == 404
    assert "/docs" not in client.get("/openapi.json").json()["paths"]
