"""The Developer Portal console (``/devportal``): pages over the developer-portal service layer.
This module: the signed-in subscriber (``Portal``), the catalogue, an API's overview with
Subscribe, and Try Out; ``devportal_apps`` holds applications and ``devportal_keys`` keys.

Every page calls ``control_plane.services.*`` exactly as its REST twin in
``control_plane/routers/devportal.py`` (and ``/oauth2``) does, so a page and
``/api/am/devportal/v3`` cannot disagree. Secrets (consumer secret, access tokens, API keys) are
shown once, in the answer to the POST that made them, and never kept in the session.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from control_plane.dependencies import AdapterGateway, DbSession, Issuer
from control_plane.devportal_schemas import (
    SubscriptionBody,
    TokenGenerateBody,
)
from control_plane.errors import ApiError
from control_plane.models import Api, Application
from control_plane.schemas import ApiBody
from control_plane.services import applications, catalogue, keys
from control_plane.services import subscriptions as subscription_service
from control_plane.settings import ControlPlaneSettings
from control_plane.web import forms
from control_plane.web.core import Csrf, DevportalPage, Page, render, router_origins, safe_next

router = APIRouter(
    prefix="/devportal", include_in_schema=False, default_response_class=HTMLResponse
)

PAGE_SIZE = 25
Text = Annotated[str, Form(max_length=2048)]
LongText = Annotated[str, Form(max_length=16_384)]
#: URL word -> key type, for ``/applications/{id}/keys/production``.
KEY_TYPES = {"production": "PRODUCTION", "sandbox": "SANDBOX"}
KEY_TITLES = {"PRODUCTION": "Production", "SANDBOX": "Sandbox"}

SUBSCRIBE_FIELDS = {"applicationId": "application", "throttlingPolicy": "tier", "apiId": "api"}
APP_FIELDS = {"name": "name", "throttlingPolicy": "throttling_policy", "description": "description"}
NAME_CHARACTERS = "Use a name without the characters < > \" ' & ;"
API_KEY_FIELDS = {
    "validityPeriod": "validity",
    "permittedIP": "permitted_ip",
    "permittedReferer": "permitted_referer",
    "additionalProperties.permittedIP": "permitted_ip",
    "additionalProperties.permittedReferer": "permitted_referer",
}


# --- the signed-in subscriber -------------------------------------------------------------


def portal_page(page: DevportalPage, session: DbSession, gateway: AdapterGateway) -> Page:
    """A devportal page; the first one after a sign-in makes sure the user has an
    application (``DefaultApplication``, through the applications service)."""
    if page.session.data.get("portal_ready") != page.user:
        applications.ensure_default(session, page.user, gateway)
        page.session.data["portal_ready"] = page.user
        page.session.modified = True
    return page


Portal = Annotated[Page, Depends(portal_page)]


def _settings(page: Page) -> ControlPlaneSettings:
    settings: ControlPlaneSettings = page.request.app.state.settings
    return settings


def key_type_of(kind: str) -> str:
    key_type = KEY_TYPES.get(kind.lower())
    if key_type is None:
        raise ApiError(404, f"there is no {kind!r} key type (production or sandbox)")
    return key_type


def _own_apps(session: DbSession, page: Page) -> list[Application]:
    rows, _ = applications.search(session, page.user, "", 1000, 0)
    return rows


# --- APIs ---------------------------------------------------------------------------------


@router.get("")
def home(page: Portal) -> Response:
    return page.redirect("/apis")


@router.get("/apis")
def list_apis(
    page: Portal,
    session: DbSession,
    query: Annotated[str, Query(max_length=500)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    found, total = catalogue.search_published(session, query, PAGE_SIZE, offset)
    return render(
        page,
        "devportal/apis.html",
        {
            "apis": found,
            "total": total,
            "query": query,
            "offset": offset,
            "size": PAGE_SIZE,
            "nav_active": "apis",
        },
    )


def api_urls(page: Page, api: Api) -> tuple[str, str]:
    """(ws URL, wss URL) of the API's base path on the router, as this browser reaches it."""
    wss, ws = router_origins(_settings(page), page.request.url.hostname or "")
    base = catalogue.base_path(api.context, api.version)
    return ws + base, wss + base


def render_api(
    page: Page,
    session: DbSession,
    api: Api,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A page of one published API with its URLs, topics and the user's subscriptions."""
    body = ApiBody.model_validate(api.definition)
    ws_url, wss_url = api_urls(page, api)
    subscribed, _ = subscription_service.list_own(session, page.user, None, str(api.id), 100, 0)
    merged = {
        "api": api,
        "body": body,
        "ws_url": ws_url,
        "wss_url": wss_url,
        "topics": catalogue.topics(body),
        "scope_info": {item.scope.name: item.scope for item in body.scopes},
        "subscribed": subscribed,
        "nav_active": "apis",
    } | (context or {})
    return render(page, template, merged, status)


def _overview(
    page: Page,
    session: DbSession,
    api: Api,
    values: dict[str, str] | None = None,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    apps = _own_apps(session, page)
    # the user's applications not subscribed to this API yet
    free = [app for app in apps if all(sub.api_id != api.id for sub in app.subscriptions)]
    body_policies = list(api.definition.get("policies") or [])
    defaults = {"tier": body_policies[0] if body_policies else ""}
    if free:
        defaults["application"] = str(free[0].id)
    context = {
        "section": "Overview",
        "applications": apps,
        "app_choices": [(str(app.id), app.name) for app in (apps if errors else free)],
        "values": defaults | (values or {}),
        "errors": errors or {},
    }
    return render_api(page, session, api, "devportal/api_overview.html", context, status)


@router.get("/apis/{api_id}")
def api_overview(page: Portal, session: DbSession, api_id: str) -> HTMLResponse:
    return _overview(page, session, catalogue.load_published(session, api_id))


def subscribe_errors(exc: ApiError) -> forms.FieldErrors:
    if exc.status == 404:  # not one of the user's applications
        return {"application": ["Choose one of your applications."]}
    if exc.status == 409:
        return {"application": [exc.description[:1].upper() + exc.description[1:]]}
    return forms.from_description(exc.description, SUBSCRIBE_FIELDS)


def subscribe_app(
    session: DbSession, gateway: AdapterGateway, page: Page, api_id: str, app_id: str, tier: str
) -> tuple[str, forms.FieldErrors]:
    """Subscribe through the service: (what was done, errors per form field)."""
    document = {"applicationId": app_id, "apiId": api_id, "throttlingPolicy": tier}
    try:
        body = SubscriptionBody.model_validate(document)
    except ValidationError as exc:
        return "", forms.from_validation(exc, SUBSCRIBE_FIELDS)
    try:
        sub = subscription_service.create(session, body, page.user, gateway)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return "", subscribe_errors(exc)
    done = f"{sub.application.name} is subscribed to {sub.api.name} on {sub.tier}."
    return done, {}


@router.post("/apis/{api_id}/subscribe", dependencies=[Csrf])
def subscribe_from_api(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    api_id: str,
    application: Text = "",
    tier: Text = "",
) -> Response:
    api = catalogue.load_published(session, api_id)
    done, errors = subscribe_app(session, gateway, page, str(api.id), application, tier)
    if "api" in errors:  # no API field on this form
        errors = forms.merge({forms.FORM: errors.pop("api")}, errors)
    if errors:
        values = {"application": application, "tier": tier}
        return _overview(page, session, api, values, errors, status=400)
    return page.redirect(f"/apis/{api.id}", done, "success")


@router.post("/subscriptions/{subscription_id}/delete", dependencies=[Csrf])
def unsubscribe(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    subscription_id: str,
    next: Text = "",
) -> Response:
    sub = subscription_service.load_own(session, subscription_id, page.user)
    what = f"{sub.application.name} is no longer subscribed to {sub.api.name}."
    subscription_service.delete_own(session, subscription_id, page.user, gateway)
    target = safe_next("devportal", next).removeprefix(page.prefix) or "/applications"
    return page.redirect(target, what, "success")


# --- Try Out ------------------------------------------------------------------------------


def _try_out(
    page: Page,
    session: DbSession,
    api: Api,
    values: dict[str, str] | None = None,
    errors: forms.FieldErrors | None = None,
    token: str = "",
    status: int = 200,
) -> HTMLResponse:
    subscribed, _ = subscription_service.list_own(session, page.user, None, str(api.id), 100, 0)
    choices = [(str(sub.application_id), sub.application.name) for sub in subscribed]
    defaults = {"application": choices[0][0] if choices else "", "key_type": "PRODUCTION"}
    context = {
        "section": "Try Out",
        "choices": choices,
        "values": defaults | (values or {}),
        "errors": errors or {},
        "token": token,
        "params": sorted(
            {
                p
                for topic in catalogue.topics(ApiBody.model_validate(api.definition))
                for p in topic.params
            }
        ),
    }
    return render_api(page, session, api, "devportal/try_out.html", context, status)


@router.get("/apis/{api_id}/try-out")
def try_out(page: Portal, session: DbSession, api_id: str) -> HTMLResponse:
    return _try_out(page, session, catalogue.load_published(session, api_id))


def topic_scopes(body: ApiBody) -> list[str]:
    """Every scope a topic of the API asks for (the issuer grants those the user's roles
    allow)."""
    found: list[str] = []
    for operation in body.operations:
        found.extend(scope for scope in operation.scopes if scope not in found)
    return found


@router.post("/apis/{api_id}/try-out", dependencies=[Csrf])
def get_test_key(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    api_id: str,
    application: Text = "",
    key_type: Text = "PRODUCTION",
) -> HTMLResponse:
    """ "Get Test Key": an access token of the application's keys, issued by the same service
    as ``/oauth2/token`` (client credentials), with every scope the API's topics use."""
    api = catalogue.load_published(session, api_id)
    values = {"application": application, "key_type": key_type}
    kind = key_type.upper()
    if kind not in KEY_TITLES:
        errors = {"key_type": ["Choose Production or Sandbox."]}
        return _try_out(page, session, api, values, errors, status=400)
    try:
        app = applications.load(session, application, page.user)
    except ApiError:
        errors = {"application": ["Choose one of your applications subscribed to this API."]}
        return _try_out(page, session, api, values, errors, status=400)
    mapping = next((row for row in app.keys if row.key_type == kind), None)
    if mapping is None:
        errors = {
            "key_type": [
                f"{app.name} has no {KEY_TITLES[kind]} keys yet: open the application's "
                f"{KEY_TITLES[kind]} Keys and click Generate Keys."
            ]
        }
        return _try_out(page, session, api, values, errors, status=400)
    body = TokenGenerateBody(scopes=topic_scopes(ApiBody.model_validate(api.definition)))
    issued = keys.generate_token(session, app, str(mapping.id), body, issuer, gateway)
    return _try_out(page, session, api, values, token=issued.access_token)
