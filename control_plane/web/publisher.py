"""The Publisher console (``/publisher``): pages over the publisher service layer.

Every page calls ``control_plane.services.*`` exactly as its REST twin in
``control_plane/routers`` does, so a page and ``/api/am/publisher/v4`` cannot disagree.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from control_plane.dependencies import DbSession
from control_plane.errors import ApiError
from control_plane.models import Api
from control_plane.schemas import ApiBody
from control_plane.services import apis as api_service
from control_plane.web import forms
from control_plane.web.core import Csrf, Page, PublisherPage, render

router = APIRouter(
    prefix="/publisher", include_in_schema=False, default_response_class=HTMLResponse
)

PAGE_SIZE = 25
Text = Annotated[str, Form(max_length=2048)]

#: Model location -> form field of the Create API form.
CREATE_FIELDS = {
    "name": "name",
    "context": "context",
    "version": "version",
    "description": "description",
    "endpointConfig.production_endpoints": "production_endpoint",
    "endpointConfig.sandbox_endpoints": "sandbox_endpoint",
    "endpointConfig": "production_endpoint",
}


def endpoint_config(production: str, sandbox: str) -> dict[str, Any] | None:
    """The WSO2 ``endpointConfig`` of a WebSocket API from the two form fields."""
    config: dict[str, Any] = {"endpoint_type": "ws"}
    if production.strip():
        config["production_endpoints"] = {"url": production.strip()}
    if sandbox.strip():
        config["sandbox_endpoints"] = {"url": sandbox.strip()}
    return config if len(config) > 1 else None


def api_nav(api: Api) -> list[tuple[str, str]]:
    """The left-hand menu of one API's pages (WSO2 4.x names)."""
    base = f"/apis/{api.id}"
    return [
        ("Overview", base),
        ("Topics", f"{base}/topics"),
        ("Endpoints", f"{base}/endpoints"),
        ("Business Plans", f"{base}/business-plans"),
        ("Runtime", f"{base}/runtime"),
        ("AsyncAPI Definition", f"{base}/asyncapi"),
        ("Lifecycle", f"{base}/lifecycle"),
        ("Deployments", f"{base}/deployments"),
        ("Subscriptions", f"{base}/subscriptions"),
    ]


def render_api(
    page: Page, api: Api, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """A page of one API, with its menu and its current definition."""
    body = ApiBody.model_validate(api.definition)
    merged = {"api": api, "body": body, "api_nav": api_nav(api)} | (context or {})
    return render(page, template, merged, status)


@router.get("")
def home(page: PublisherPage) -> Response:
    return page.redirect("/apis")


@router.get("/apis")
def list_apis(
    page: PublisherPage,
    session: DbSession,
    query: Annotated[str, Query(max_length=500)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    found, total = api_service.search(session, query, PAGE_SIZE, offset)
    return render(
        page,
        "publisher/apis.html",
        {"apis": found, "total": total, "query": query, "offset": offset, "size": PAGE_SIZE},
    )


def _create_form(
    page: PublisherPage, values: dict[str, str], errors: forms.FieldErrors, status: int = 200
) -> HTMLResponse:
    return render(page, "publisher/create.html", {"values": values, "errors": errors}, status)


@router.get("/apis/create")
def create_form(page: PublisherPage) -> HTMLResponse:
    return _create_form(page, {"version": "1.0.0"}, {})


@router.post("/apis/create", dependencies=[Csrf])
def create_api(
    page: PublisherPage,
    session: DbSession,
    name: Text = "",
    context: Text = "",
    version: Text = "",
    description: Text = "",
    production_endpoint: Text = "",
    sandbox_endpoint: Text = "",
) -> Response:
    values = {
        "name": name,
        "context": context,
        "version": version,
        "description": description,
        "production_endpoint": production_endpoint,
        "sandbox_endpoint": sandbox_endpoint,
    }
    document: dict[str, Any] = {
        "name": name,
        "context": context,
        "version": version,
        "type": "WS",
        "description": description or None,
        "endpointConfig": endpoint_config(production_endpoint, sandbox_endpoint),
    }
    errors: forms.FieldErrors = {}
    if not production_endpoint.strip() and not sandbox_endpoint.strip():
        errors["production_endpoint"] = [
            "Give a production or a sandbox endpoint (ws:// or wss://)."
        ]
    try:
        body = ApiBody.model_validate(document)
    except ValidationError as exc:
        errors = forms.merge(forms.from_validation(exc, CREATE_FIELDS), errors)
    if errors:
        return _create_form(page, values, errors, status=400)
    try:
        api = api_service.create(session, body, page.user)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return _create_form(
            page, values, forms.from_description(exc.description, CREATE_FIELDS), exc.status
        )
    return page.redirect(f"/apis/{api.id}", f"API {api.name} {api.version} created.", "success")


@router.get("/apis/{api_id}")
def overview(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    return render_api(page, api, "publisher/overview.html")
