"""``/docs``: the OpenAPI page, with every file it loads served by the process itself (the
control plane's REST APIs and the adapter's).

FastAPI's default page loads Swagger UI's JavaScript and CSS from a CDN and its favicon from
FastAPI's site, so on a machine without internet it stays blank (issue 13). Here the files come
from the ``swagger-ui-bundle-v2`` package (Swagger UI's ``dist`` files on PyPI), mounted under
``/docs/assets``, as FastAPI documents for self-hosted docs assets. The page's
Content-Security-Policy allows this origin only, so a browser refuses anything else it would
try (Swagger UI's online validator badge is switched off as well). ReDoc is not served: it
would need another bundle, and the Swagger UI page shows the same operations.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(str(swagger_ui_path))
#: Swagger UI runs one inline script (FastAPI's page) and inline styles; it draws icons as data:
#: URLs and fetches /openapi.json. Nothing may come from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)


def swagger_ui_page(title: str, openapi_url: str) -> HTMLResponse:
    """Swagger UI for ``openapi_url`` with its JavaScript, CSS and icon from ``/docs/assets``."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API documentation",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; build ``app`` with ``docs_url=None, redoc_url=None``.

    Raises:
        RuntimeError: the Swagger UI files are missing (a broken install).
    """
    if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI files missing in {ASSETS_DIR}: reinstall wsgate")
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return swagger_ui_page(app.title, openapi_url)
