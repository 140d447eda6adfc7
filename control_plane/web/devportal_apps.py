"""Developer Portal: applications (list, create, edit, delete with application tiers) and
an application's subscriptions, over ``services.applications`` / ``services.subscriptions``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from control_plane.dependencies import AdapterGateway, DbSession
from control_plane.devportal_schemas import (
    ApplicationBody,
)
from control_plane.errors import ApiError
from control_plane.models import Api, Application
from control_plane.services import applications, catalogue, policies
from control_plane.services import subscriptions as subscription_service
from control_plane.web import forms
from control_plane.web.core import Csrf, Page, render
from control_plane.web.devportal import (
    APP_FIELDS,
    NAME_CHARACTERS,
    Portal,
    Text,
    subscribe_app,
)

router = APIRouter(
    prefix="/devportal", include_in_schema=False, default_response_class=HTMLResponse
)


# --- applications -------------------------------------------------------------------------


def app_nav(app: Application) -> list[tuple[str, str]]:
    """The left-hand menu of one application's pages (WSO2 4.x names)."""
    base = f"/applications/{app.id}"
    return [
        ("Overview", base),
        ("Production Keys", f"{base}/keys/production"),
        ("Sandbox Keys", f"{base}/keys/sandbox"),
        ("Subscriptions", f"{base}/subscriptions"),
        ("Edit", f"{base}/edit"),
    ]


def render_app(
    page: Page,
    app: Application,
    template: str,
    section: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    merged = {
        "app": app,
        "app_nav": app_nav(app),
        "section": section,
        "nav_active": "applications",
    } | (context or {})
    return render(page, template, merged, status)


@router.get("/applications")
def list_applications(
    page: Portal,
    session: DbSession,
    query: Annotated[str, Query(max_length=500)] = "",
) -> HTMLResponse:
    rows, total = applications.search(session, page.user, query, 1000, 0)
    return render(
        page,
        "devportal/applications.html",
        {"applications": rows, "total": total, "query": query, "nav_active": "applications"},
    )


def _app_tiers(session: DbSession) -> list[tuple[str, str]]:
    return [
        (row.name, f"{row.name} — {row.description}" if row.description else row.name)
        for row in policies.list_policies(session, "application")
    ]


def _app_form(
    page: Page,
    session: DbSession,
    values: dict[str, str],
    errors: forms.FieldErrors,
    app: Application | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = {"values": values, "errors": errors, "tiers": _app_tiers(session)}
    if app is None:
        context["nav_active"] = "create"
        return render(page, "devportal/app_create.html", context, status)
    return render_app(page, app, "devportal/app_edit.html", "Edit", context, status)


def _app_body(
    name: str, throttling_policy: str, description: str
) -> tuple[ApplicationBody | None, forms.FieldErrors]:
    document = {"name": name, "throttlingPolicy": throttling_policy, "description": description}
    try:
        return ApplicationBody.model_validate(document), {}
    except ValidationError as exc:
        errors = forms.from_validation(exc, APP_FIELDS)
        if "name" in errors:  # the schema's pattern, in words
            errors["name"] = [
                NAME_CHARACTERS if message.startswith("String should match pattern") else message
                for message in errors["name"]
            ]
        return None, errors


def app_errors(exc: ApiError) -> forms.FieldErrors:
    if exc.status == 409:
        return {"name": [exc.description[:1].upper() + exc.description[1:]]}
    return forms.from_description(exc.description, APP_FIELDS)


@router.get("/applications/create")
def create_application_form(page: Portal, session: DbSession) -> HTMLResponse:
    return _app_form(page, session, {"throttling_policy": "Unlimited"}, {})


@router.post("/applications/create", dependencies=[Csrf])
def create_application(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    name: Text = "",
    throttling_policy: Text = "",
    description: Text = "",
) -> Response:
    values = {"name": name, "throttling_policy": throttling_policy, "description": description}
    body, errors = _app_body(name, throttling_policy, description)
    if body is None:
        return _app_form(page, session, values, errors, status=400)
    try:
        app = applications.create(session, body, page.user, gateway)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return _app_form(page, session, values, app_errors(exc), status=exc.status)
    return page.redirect(f"/applications/{app.id}", f"Application {app.name} created.", "success")


@router.get("/applications/{app_id}")
def application_overview(page: Portal, session: DbSession, app_id: str) -> HTMLResponse:
    app = applications.load(session, app_id, page.user)
    return render_app(page, app, "devportal/app_overview.html", "Overview")


@router.get("/applications/{app_id}/edit")
def edit_application_form(page: Portal, session: DbSession, app_id: str) -> HTMLResponse:
    app = applications.load(session, app_id, page.user)
    values = {
        "name": app.name,
        "throttling_policy": app.throttling_policy,
        "description": app.description,
    }
    return _app_form(page, session, values, {}, app)


@router.post("/applications/{app_id}/edit", dependencies=[Csrf])
def edit_application(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    app_id: str,
    name: Text = "",
    throttling_policy: Text = "",
    description: Text = "",
) -> Response:
    app = applications.load(session, app_id, page.user)
    values = {"name": name, "throttling_policy": throttling_policy, "description": description}
    body, errors = _app_body(name, throttling_policy, description)
    if body is None:
        return _app_form(page, session, values, errors, app, status=400)
    try:
        applications.update(session, app_id, body, page.user, gateway)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        session.rollback()
        session.refresh(app)
        return _app_form(page, session, values, app_errors(exc), app, status=exc.status)
    return page.redirect(f"/applications/{app.id}", f"Application {app.name} saved.", "success")


@router.post("/applications/{app_id}/delete", dependencies=[Csrf])
def delete_application(
    page: Portal, session: DbSession, gateway: AdapterGateway, app_id: str
) -> Response:
    app = applications.load(session, app_id, page.user)
    name = app.name
    applications.delete(session, app_id, page.user, gateway)
    return page.redirect(
        "/applications", f"Application {name}, its keys and subscriptions deleted.", "success"
    )


# --- an application's subscriptions -------------------------------------------------------


def plans_of(api: Api) -> str:
    return ", ".join(api.definition.get("policies") or []) or "no plans"


def _app_subscriptions(
    page: Page,
    session: DbSession,
    app: Application,
    values: dict[str, str] | None = None,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    rows, _ = subscription_service.list_own(session, page.user, str(app.id), None, 1000, 0)
    published, _ = catalogue.search_published(session, "", 1000, 0)
    taken = {sub.api_id for sub in rows}
    offer = [api for api in published if api.id not in taken]
    tiers = sorted({t for api in offer for t in api.definition.get("policies") or []})
    defaults = {"api": str(offer[0].id) if offer else "", "tier": tiers[0] if tiers else ""}
    context = {
        "subscriptions": rows,
        "offer": [(str(api.id), f"{api.name} {api.version} — {plans_of(api)}") for api in offer],
        "tiers": tiers,
        "values": defaults | (values or {}),
        "errors": errors or {},
    }
    return render_app(
        page, app, "devportal/app_subscriptions.html", "Subscriptions", context, status
    )


@router.get("/applications/{app_id}/subscriptions")
def application_subscriptions(page: Portal, session: DbSession, app_id: str) -> HTMLResponse:
    app = applications.load(session, app_id, page.user)
    return _app_subscriptions(page, session, app)


@router.post("/applications/{app_id}/subscriptions", dependencies=[Csrf])
def subscribe_from_application(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    app_id: str,
    api: Text = "",
    tier: Text = "",
) -> Response:
    app = applications.load(session, app_id, page.user)
    done, errors = subscribe_app(session, gateway, page, api, str(app.id), tier)
    if errors:
        values = {"api": api, "tier": tier}
        return _app_subscriptions(page, session, app, values, errors, status=400)
    return page.redirect(f"/applications/{app.id}/subscriptions", done, "success")
