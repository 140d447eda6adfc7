"""Developer portal (``/api/am/devportal/v3``): published APIs, applications, keys and tokens,
subscriptions. Every application belongs to the user who created it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from control_plane.auth import Subscriber
from control_plane.dependencies import AdapterGateway, ApiId, DbSession, Issuer
from control_plane.devportal_schemas import (
    ApiKeyGenerateBody,
    ApiKeyOut,
    ApiKeyRevokeBody,
    ApplicationBody,
    ApplicationKey,
    ApplicationList,
    ApplicationOut,
    ApplicationToken,
    KeyGenerateBody,
    KeyList,
    SecretOut,
    SubscriptionBody,
    SubscriptionList,
    SubscriptionOut,
    TokenGenerateBody,
)
from control_plane.schemas import MAX_OFFSET, MAX_QUERY, ApiList, ApiOut, Pagination
from control_plane.services import api_keys, applications, catalogue, keys, subscriptions
from control_plane.services import apis as api_service

DEVPORTAL_PREFIX = "/api/am/devportal/v3"

router = APIRouter()

AppId = Annotated[str, Path(alias="applicationId")]
KeyMappingId = Annotated[str, Path(alias="keyMappingId")]
SubscriptionId = Annotated[str, Path(alias="subscriptionId")]
KeyTypePath = Annotated[str, Path(alias="keyType", max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]

# --- APIs ---------------------------------------------------------------------------------------


@router.get("/apis", response_model=ApiList, tags=["APIs (devportal)"])
def list_published(
    session: DbSession,
    _: Subscriber,
    query: Annotated[str, Query(max_length=MAX_QUERY)] = "",
    limit: Limit = 25,
    offset: Offset = 0,
) -> ApiList:
    """Published APIs (name search with ``query``)."""
    rows, total = catalogue.search_published(session, query, limit, offset)
    found = [api_service.to_info(api) for api in rows]
    return ApiList(
        count=len(found), list=found, pagination=Pagination(offset=offset, limit=limit, total=total)
    )


@router.get("/apis/{apiId}", response_model=ApiOut, tags=["APIs (devportal)"])
def get_published(api_id: ApiId, session: DbSession, _: Subscriber) -> ApiOut:
    return api_service.to_out(catalogue.load_published(session, api_id))


# --- applications -------------------------------------------------------------------------------


@router.post("/applications", status_code=201, response_model=ApplicationOut, tags=["Applications"])
def create_application(
    request: Request,
    body: ApplicationBody,
    session: DbSession,
    gateway: AdapterGateway,
    user: Subscriber,
    response: Response,
) -> ApplicationOut:
    limit = request.app.state.settings.cp_max_applications_per_user
    app = applications.create(session, body, user, gateway, limit)
    response.headers["Location"] = f"{DEVPORTAL_PREFIX}/applications/{app.id}"
    return applications.to_out(app)


@router.get("/applications", response_model=ApplicationList, tags=["Applications"])
def list_applications(
    session: DbSession,
    user: Subscriber,
    query: Annotated[str, Query(max_length=MAX_QUERY)] = "",
    limit: Limit = 25,
    offset: Offset = 0,
) -> ApplicationList:
    rows, total = applications.search(session, user, query, limit, offset)
    return ApplicationList(
        count=len(rows),
        list=[applications.to_info(app) for app in rows],
        pagination=Pagination(offset=offset, limit=limit, total=total),
    )


@router.get("/applications/{applicationId}", response_model=ApplicationOut, tags=["Applications"])
def get_application(app_id: AppId, session: DbSession, user: Subscriber) -> ApplicationOut:
    return applications.to_out(applications.load(session, app_id, user))


@router.put("/applications/{applicationId}", response_model=ApplicationOut, tags=["Applications"])
def update_application(
    app_id: AppId,
    body: ApplicationBody,
    session: DbSession,
    gateway: AdapterGateway,
    user: Subscriber,
) -> ApplicationOut:
    return applications.to_out(applications.update(session, app_id, body, user, gateway))


@router.delete("/applications/{applicationId}", tags=["Applications"])
def delete_application(
    app_id: AppId, session: DbSession, gateway: AdapterGateway, user: Subscriber
) -> dict[str, str]:
    """Delete an application, its subscriptions and its keys."""
    applications.delete(session, app_id, user, gateway)
    return {}


# --- keys and tokens ----------------------------------------------------------------------------


@router.post(
    "/applications/{applicationId}/generate-keys",
    response_model=ApplicationKey,
    response_model_exclude_none=True,
    tags=["Application Keys"],
)
def generate_keys(
    app_id: AppId,
    body: KeyGenerateBody,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    user: Subscriber,
) -> ApplicationKey:
    """Consumer key and secret for PRODUCTION or SANDBOX; the secret is shown only here."""
    app = applications.load(session, app_id, user)
    return keys.generate(session, app, body, issuer, gateway)


@router.get(
    "/applications/{applicationId}/oauth-keys",
    response_model=KeyList,
    response_model_exclude_none=True,
    tags=["Application Keys"],
)
def list_keys(app_id: AppId, session: DbSession, user: Subscriber) -> KeyList:
    app = applications.load(session, app_id, user)
    return KeyList(count=len(app.keys), list=[keys.to_out(row) for row in app.keys])


@router.get(
    "/applications/{applicationId}/oauth-keys/{keyMappingId}",
    response_model=ApplicationKey,
    response_model_exclude_none=True,
    tags=["Application Keys"],
)
def get_key(
    app_id: AppId, key_mapping_id: KeyMappingId, session: DbSession, user: Subscriber
) -> ApplicationKey:
    app = applications.load(session, app_id, user)
    return keys.to_out(keys.load(session, app, key_mapping_id))


@router.post(
    "/applications/{applicationId}/oauth-keys/{keyMappingId}/regenerate-secret",
    response_model=SecretOut,
    tags=["Application Keys"],
)
def regenerate_secret(
    app_id: AppId, key_mapping_id: KeyMappingId, session: DbSession, user: Subscriber
) -> SecretOut:
    """A new consumer secret; the old one stops working (issued tokens stay valid)."""
    app = applications.load(session, app_id, user)
    consumer_key, secret = keys.regenerate_secret(session, app, key_mapping_id)
    return SecretOut(consumer_key=consumer_key, consumer_secret=secret)


@router.post(
    "/applications/{applicationId}/oauth-keys/{keyMappingId}/generate-token",
    response_model=ApplicationToken,
    tags=["Application Tokens"],
)
def generate_token(
    app_id: AppId,
    key_mapping_id: KeyMappingId,
    body: TokenGenerateBody,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    user: Subscriber,
) -> ApplicationToken:
    app = applications.load(session, app_id, user)
    return keys.generate_token(session, app, key_mapping_id, body, issuer, gateway)


# --- API keys -----------------------------------------------------------------------------------


@router.post(
    "/applications/{applicationId}/api-keys/{keyType}/generate",
    response_model=ApiKeyOut,
    tags=["API Keys"],
)
def generate_api_key(
    app_id: AppId,
    key_type: KeyTypePath,
    session: DbSession,
    issuer: Issuer,
    user: Subscriber,
    body: ApiKeyGenerateBody | None = None,
) -> ApiKeyOut:
    """An API key (a signed JWT) for PRODUCTION or SANDBOX, shown only in this answer.

    ``validityPeriod`` in seconds (-1 or 0: never expires; absent: one hour);
    ``additionalProperties.permittedIP`` / ``permittedReferer`` restrict where it may be used.
    """
    app = applications.load(session, app_id, user)
    return api_keys.generate(session, app, key_type, body or ApiKeyGenerateBody(), issuer)


@router.post("/applications/{applicationId}/api-keys/{keyType}/revoke", tags=["API Keys"])
def revoke_api_key(
    app_id: AppId,
    key_type: KeyTypePath,
    body: ApiKeyRevokeBody,
    session: DbSession,
    gateway: AdapterGateway,
    issuer: Issuer,
    user: Subscriber,
) -> dict[str, str]:
    """Revoke an API key: gateways refuse it and close connections opened with it."""
    app = applications.load(session, app_id, user)
    api_keys.revoke(session, app, key_type, body, issuer, gateway)
    return {}


# --- subscriptions ------------------------------------------------------------------------------


@router.post(
    "/subscriptions", status_code=201, response_model=SubscriptionOut, tags=["Subscriptions"]
)
def subscribe(
    body: SubscriptionBody,
    session: DbSession,
    gateway: AdapterGateway,
    user: Subscriber,
    response: Response,
) -> SubscriptionOut:
    """Subscribe an application to a PUBLISHED API on one of the tiers it offers."""
    sub = subscriptions.create(session, body, user, gateway)
    response.headers["Location"] = f"{DEVPORTAL_PREFIX}/subscriptions/{sub.id}"
    return subscriptions.to_out(sub)


@router.get("/subscriptions", response_model=SubscriptionList, tags=["Subscriptions"])
def list_subscriptions(
    session: DbSession,
    user: Subscriber,
    application_id: Annotated[str | None, Query(alias="applicationId")] = None,
    api_id: Annotated[str | None, Query(alias="apiId")] = None,
    limit: Limit = 25,
    offset: Offset = 0,
) -> SubscriptionList:
    rows, total = subscriptions.list_own(session, user, application_id, api_id, limit, offset)
    return SubscriptionList(
        count=len(rows),
        list=[subscriptions.to_out(sub) for sub in rows],
        pagination=Pagination(offset=offset, limit=limit, total=total),
    )


@router.get(
    "/subscriptions/{subscriptionId}", response_model=SubscriptionOut, tags=["Subscriptions"]
)
def get_subscription(
    subscription_id: SubscriptionId, session: DbSession, user: Subscriber
) -> SubscriptionOut:
    return subscriptions.to_out(subscriptions.load_own(session, subscription_id, user))


@router.delete("/subscriptions/{subscriptionId}", tags=["Subscriptions"])
def unsubscribe(
    subscription_id: SubscriptionId, session: DbSession, gateway: AdapterGateway, user: Subscriber
) -> dict[str, str]:
    subscriptions.delete_own(session, subscription_id, user, gateway)
    return {}
