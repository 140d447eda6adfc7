"""OAuth2 token service on the control plane: ``/oauth2/token`` (RFC 6749 client
credentials), ``/oauth2/revoke`` (RFC 7009) and ``/oauth2/jwks``.

Errors here are RFC 6749 bodies ``{"error", "error_description"}``, not WSO2 ones.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from control_plane.dependencies import AdapterGateway, DbSession, Issuer
from control_plane.models import KeyMapping
from control_plane.services import oauth
from wsgate_common.backoff import Backoff, keys_for, log_failure, retry_header, too_many_description
from wsgate_common.documents import clip

log = logging.getLogger(__name__)

router = APIRouter(prefix="/oauth2", tags=["OAuth2"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: RFC 6749 scope-token characters (NQCHAR without space).
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")

FormText = Annotated[str | None, Form()]


class OAuthError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        basic: bool = False,
        retry_after: str = "",
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.basic = basic
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.retry_after:
            headers["Retry-After"] = self.retry_after
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="wsgate oauth2"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _basic(header: str | None) -> tuple[str, str] | None:
    """(client id, secret) from ``Authorization: Basic``; None when there is no Basic header.

    Raises:
        OAuthError: a Basic header that cannot be decoded.
    """
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(401, "invalid_client", "malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(401, "invalid_client", "malformed Basic credentials")
    # RFC 6749 2.3.1: both are form-urlencoded before Basic encoding.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _client(
    request: Request,
    session: DbSession,
    client_id: str | None,
    client_secret: str | None,
) -> KeyMapping:
    """The authenticated client (Basic, or client_id/client_secret in the form)."""
    basic = _basic(request.headers.get("authorization"))
    if basic is not None and client_id:
        raise OAuthError(
            400, "invalid_request", "authenticate the client one way: Basic or form, not both"
        )
    if basic is None and not (client_id and client_secret):
        raise OAuthError(
            401,
            "invalid_client",
            "client authentication required (HTTP Basic consumerKey:consumerSecret)",
        )
    key, secret = basic if basic is not None else (client_id or "", client_secret or "")
    # wrong secrets are held back per client and address (each check costs an scrypt)
    backoff: Backoff = request.app.state.auth_backoff
    address = request.client.host if request.client else ""
    keys = keys_for(f"client:{key}", address)
    wait = backoff.retry_after(keys)
    if wait > 0:
        raise OAuthError(
            429, "slow_down", too_many_description(wait), retry_after=retry_header(wait)
        )
    mapping = oauth.authenticate(session, key, secret)
    if mapping is None:
        log_failure(log, f"client:{key}", address, backoff.failed(keys))
        raise OAuthError(401, "invalid_client", "unknown client or wrong secret")
    backoff.succeeded(keys[:1])
    return mapping


def _scopes(scope: str | None) -> list[str]:
    requested = (scope or "").split()
    for item in requested:
        if not _SCOPE_TOKEN.match(item):
            raise OAuthError(400, "invalid_scope", f"scope {clip(item)} has characters not allowed")
    return requested


@router.post("/token", response_model=None)
def token(
    request: Request,
    session: DbSession,
    issuer: Issuer,
    grant_type: FormText = None,
    scope: FormText = None,
    client_id: FormText = None,
    client_secret: FormText = None,
    validity_period: FormText = None,
) -> JSONResponse:
    """Client credentials grant: ``grant_type=client_credentials`` and optional ``scope``."""
    try:
        mapping = _client(request, session, client_id, client_secret)
        if not grant_type:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", f"grant type {clip(grant_type)} is not supported"
            )
        if grant_type not in mapping.grant_types:
            raise OAuthError(
                400,
                "unauthorized_client",
                f"the client's keys do not allow the {grant_type} grant",
            )
        requested = _scopes(scope)
        validity = None
        if validity_period:
            if not validity_period.isdigit() or not 0 < int(validity_period) <= 31_536_000:
                raise OAuthError(400, "invalid_request", "validity_period must be 1..31536000")
            validity = int(validity_period)
    except OAuthError as exc:
        return exc.response()
    issued = oauth.issue(issuer, mapping, requested, validity)
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.validity,
        "scope": " ".join(issued.scopes),
    }
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/revoke", response_model=None)
def revoke(
    request: Request,
    session: DbSession,
    issuer: Issuer,
    gateway: AdapterGateway,
    token: FormText = None,
    token_type_hint: FormText = None,
    client_id: FormText = None,
    client_secret: FormText = None,
) -> JSONResponse:
    """Revoke an access token (RFC 7009): 200 also for unknown or expired tokens."""
    try:
        mapping = _client(request, session, client_id, client_secret)
        if not token:
            raise OAuthError(400, "invalid_request", "token is required")
        outcome = oauth.revoke(session, issuer, mapping, token)
        if outcome == "foreign":
            raise OAuthError(400, "unauthorized_client", "the token was issued to another client")
    except OAuthError as exc:
        return exc.response()
    if outcome == "revoked":
        gateway.subscriptions_changed()
    return JSONResponse({}, headers=_NO_STORE)


@router.get("/jwks")
def jwks(issuer: Issuer) -> dict[str, Any]:
    """The public keys access tokens are signed with."""
    return issuer.key.jwks()
