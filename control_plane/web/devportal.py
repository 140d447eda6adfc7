"""The Developer Portal console (``/devportal``): pages over the developer-portal service layer.

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
    ApiKeyGenerateBody,
    ApiKeyRevokeBody,
    ApplicationBody,
    KeyGenerateBody,
    SubscriptionBody,
    TokenGenerateBody,
)
from control_plane.errors import ApiError
from control_plane.models import Api, Application, KeyMapping
from control_plane.schemas import ApiBody
from control_plane.services import api_keys, applications, catalogue, keys, oauth, policies
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


def _key_type(kind: str) -> str:
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


def _subscribe(
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
    done, errors = _subscribe(session, gateway, page, str(api.id), application, tier)
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
    done, errors = _subscribe(session, gateway, page, api, str(app.id), tier)
    if errors:
        values = {"api": api, "tier": tier}
        return _app_subscriptions(page, session, app, values, errors, status=400)
    return page.redirect(f"/applications/{app.id}/subscriptions", done, "success")


# --- keys, tokens and API keys ------------------------------------------------------------


def subscribed_scopes(app: Application) -> list[str]:
    """The scopes the topics of the APIs ``app`` subscribes to use, for the token form."""
    found: list[str] = []
    for sub in app.subscriptions:
        for scope in topic_scopes(ApiBody.model_validate(sub.api.definition)):
            if scope not in found:
                found.append(scope)
    return found


def _mapping(app: Application, key_type: str) -> KeyMapping | None:
    return next((row for row in app.keys if row.key_type == key_type), None)


def _keys_page(
    page: Page,
    app: Application,
    key_type: str,
    shown: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    title = KEY_TITLES[key_type]
    context = {
        "key_type": key_type,
        "kind": key_type.lower(),
        "key_title": title,
        "mapping": _mapping(app, key_type),
        "scopes": subscribed_scopes(app),
        "shown": shown or {},
        "values": {"token_validity": "3600", "apikey_validity": "3600"} | (values or {}),
        "errors": errors or {},
    }
    return render_app(page, app, "devportal/app_keys.html", f"{title} Keys", context, status)


@router.get("/applications/{app_id}/keys/{kind}")
def application_keys(page: Portal, session: DbSession, app_id: str, kind: str) -> HTMLResponse:
    key_type = _key_type(kind)
    return _keys_page(page, applications.load(session, app_id, page.user), key_type)


def _validity(value: str, field: str) -> tuple[int | None, forms.FieldErrors]:
    text = value.strip()
    if not text:
        return None, {}
    try:
        return int(text), {}
    except ValueError:
        return None, {field: ["Enter a whole number of seconds."]}


@router.post("/applications/{app_id}/keys/{kind}/generate", dependencies=[Csrf])
def generate_keys(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    app_id: str,
    kind: str,
    validity: Text = "",
) -> Response:
    """ "Generate Keys": consumer key and secret (and a first access token), shown once."""
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    values = {"validity": validity}
    seconds, errors = _validity(validity, "validity")
    if not errors:
        try:
            body = KeyGenerateBody.model_validate(
                {"keyType": key_type, "validityTime": seconds, "scopes": subscribed_scopes(app)}
            )
        except ValidationError as exc:
            errors = forms.from_validation(exc, {"validityTime": "validity"})
    if errors:
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    try:
        made = keys.generate(session, app, body, issuer, gateway)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        errors = forms.from_description(exc.description, {})
        return _keys_page(page, app, key_type, values=values, errors=errors, status=exc.status)
    shown = {
        "consumer_secret": made.consumer_secret,
        "access_token": made.token.access_token if made.token else "",
        "token_scopes": made.token.token_scopes if made.token else [],
        "message": f"{KEY_TITLES[key_type]} keys generated for {app.name}.",
    }
    return _keys_page(page, app, key_type, shown)


@router.post("/applications/{app_id}/keys/{kind}/regenerate-secret", dependencies=[Csrf])
def regenerate_secret(page: Portal, session: DbSession, app_id: str, kind: str) -> HTMLResponse:
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    mapping = _mapping(app, key_type)
    if mapping is None:
        errors = {forms.FORM: ["There are no keys yet: Generate Keys first."]}
        return _keys_page(page, app, key_type, errors=errors, status=400)
    _, secret = keys.regenerate_secret(session, app, str(mapping.id))
    shown = {
        "consumer_secret": secret,
        "message": "A new consumer secret: the old one no longer works.",
    }
    return _keys_page(page, app, key_type, shown)


@router.post("/applications/{app_id}/keys/{kind}/token", dependencies=[Csrf])
def generate_access_token(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    app_id: str,
    kind: str,
    scopes: Annotated[list[str] | None, Form()] = None,
    token_validity: Text = "",
) -> HTMLResponse:
    """ "Generate Access Token" with the chosen scopes (the issuer grants those the user's
    roles allow), shown once."""
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    scopes = scopes or []
    values = {"token_validity": token_validity, "scopes": scopes}
    mapping = _mapping(app, key_type)
    if mapping is None:
        errors = {forms.FORM: ["There are no keys yet: Generate Keys first."]}
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    seconds, errors = _validity(token_validity, "token_validity")
    if not errors:
        document: dict[str, Any] = {"scopes": scopes}
        if seconds is not None:
            document["validityPeriod"] = seconds
        try:
            body = TokenGenerateBody.model_validate(document)
        except ValidationError as exc:
            errors = forms.from_validation(
                exc, {"validityPeriod": "token_validity", "scopes": "scopes"}
            )
    if errors:
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    issued = keys.generate_token(session, app, str(mapping.id), body, issuer, gateway)
    shown = {
        "access_token": issued.access_token,
        "token_scopes": issued.token_scopes,
        "validity": issued.validity_time,
        "message": "Access token generated.",
    }
    return _keys_page(page, app, key_type, shown, values)


@router.post("/applications/{app_id}/keys/{kind}/revoke-token", dependencies=[Csrf])
def revoke_access_token(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    app_id: str,
    kind: str,
    token: LongText = "",
) -> Response:
    """Revoke an access token of these keys (what ``/oauth2/revoke`` does): gateways refuse it
    and close the connections opened with it."""
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    mapping = _mapping(app, key_type)
    values = {"token": token}
    if mapping is None:
        errors = {forms.FORM: ["There are no keys yet: Generate Keys first."]}
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    if not token.strip():
        errors = {"token": ["Paste the access token to revoke."]}
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    outcome = oauth.revoke(session, issuer, mapping, token.strip())
    if outcome == "foreign":
        errors = {"token": [f"This token was issued to other keys, not {app.name}'s."]}
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    if outcome == "revoked":
        gateway.subscriptions_changed()
        message = "Access token revoked: gateways refuse it and close its connections."
    else:
        message = "Nothing to revoke: the token is not a live token of these keys."
    return page.redirect(f"/applications/{app.id}/keys/{kind.lower()}", message, "success")


@router.post("/applications/{app_id}/keys/{kind}/api-key", dependencies=[Csrf])
def generate_api_key(
    page: Portal,
    session: DbSession,
    issuer: Issuer,
    app_id: str,
    kind: str,
    apikey_validity: Text = "",
    permitted_ip: Text = "",
    permitted_referer: Text = "",
) -> HTMLResponse:
    """ "Generate API Key": a signed API key, shown once."""
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    values = {
        "apikey_validity": apikey_validity,
        "permitted_ip": permitted_ip,
        "permitted_referer": permitted_referer,
    }
    seconds, errors = _validity(apikey_validity, "apikey_validity")
    if errors:
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    restrictions: dict[str, object] = {}
    if permitted_ip.strip():
        restrictions["permittedIP"] = permitted_ip
    if permitted_referer.strip():
        restrictions["permittedReferer"] = permitted_referer
    body = ApiKeyGenerateBody(validity_period=seconds, additional_properties=restrictions)
    try:
        made = api_keys.generate(session, app, key_type, body, issuer)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        fields = API_KEY_FIELDS | {"validityPeriod": "apikey_validity"}
        errors = forms.from_description(exc.description, fields)
        return _keys_page(page, app, key_type, values=values, errors=errors, status=exc.status)
    shown = {
        "apikey": made.apikey,
        "apikey_validity": made.validity_time,
        "message": f"API key {made.key_name} generated.",
    }
    return _keys_page(page, app, key_type, shown)


@router.post("/applications/{app_id}/keys/{kind}/revoke-api-key", dependencies=[Csrf])
def revoke_api_key(
    page: Portal,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    app_id: str,
    kind: str,
    apikey: LongText = "",
) -> Response:
    key_type = _key_type(kind)
    app = applications.load(session, app_id, page.user)
    values = {"apikey": apikey}
    try:
        body = ApiKeyRevokeBody(apikey=apikey)
    except ValidationError:
        errors = {"apikey": ["Paste the API key to revoke."]}
        return _keys_page(page, app, key_type, values=values, errors=errors, status=400)
    try:
        api_keys.revoke(session, app, key_type, body, issuer, gateway)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        errors = forms.from_description(exc.description, {"apikey": "apikey"})
        return _keys_page(page, app, key_type, values=values, errors=errors, status=exc.status)
    return page.redirect(
        f"/applications/{app.id}/keys/{kind.lower()}",
        "API key revoked: gateways refuse it and close its connections.",
        "success",
    )
