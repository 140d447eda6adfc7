"""Developer Portal: an application's Production and Sandbox keys (Generate Keys, Regenerate
Secret), access tokens (generate with scopes, revoke) and API keys (generate, revoke), over
``services.keys``, ``services.oauth`` and ``services.api_keys``. Every secret is shown once, in
the answer to the POST that made it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from control_plane.dependencies import AdapterGateway, DbSession, Issuer
from control_plane.devportal_schemas import (
    ApiKeyGenerateBody,
    ApiKeyRevokeBody,
    KeyGenerateBody,
    TokenGenerateBody,
)
from control_plane.errors import ApiError
from control_plane.models import Application, KeyMapping
from control_plane.schemas import ApiBody
from control_plane.services import api_keys, applications, keys, oauth
from control_plane.web import forms
from control_plane.web.core import Csrf, Page
from control_plane.web.devportal import (
    API_KEY_FIELDS,
    KEY_TITLES,
    LongText,
    Portal,
    Text,
    key_type_of,
    topic_scopes,
)
from control_plane.web.devportal_apps import render_app

router = APIRouter(
    prefix="/devportal", include_in_schema=False, default_response_class=HTMLResponse
)


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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
    key_type = key_type_of(kind)
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
