"""Developer portal (``/api/am/devportal/v3``) and publisher subscription bodies, with WSO2's
field names."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from control_plane.schemas import CamelModel, Pagination

KeyType = Literal["PRODUCTION", "SANDBOX"]
SubscriptionState = Literal["UNBLOCKED", "BLOCKED", "PROD_ONLY_BLOCKED"]

#: Grant types WSO2's resident key manager knows; only client_credentials is served by
#: ``/oauth2/token`` here, the others are accepted and recorded.
GRANT_TYPES = frozenset(
    {
        "client_credentials",
        "password",
        "refresh_token",
        "authorization_code",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
        "urn:ietf:params:oauth:grant-type:device_code",
        "iwa:ntlm",
    }
)
MAX_VALIDITY = 365 * 24 * 3600
_SCOPE = r"^[A-Za-z0-9_:.\-/]{1,255}$"


# --- applications -------------------------------------------------------------------------------


class ApplicationBody(CamelModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^<>\"'&;]+$")
    throttling_policy: str = Field(default="Unlimited", min_length=1, max_length=255)
    description: str = Field(default="", max_length=1024)
    token_type: Literal["JWT", "OAUTH"] = "JWT"
    attributes: dict[str, str] = Field(default_factory=dict)
    groups: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class ApplicationToken(CamelModel):
    access_token: str
    token_scopes: list[str]
    validity_time: int


class ApplicationKey(CamelModel):
    key_mapping_id: str
    key_manager: str
    consumer_key: str
    #: Only in the answer that creates or regenerates it; stored hashed.
    consumer_secret: str | None = None
    supported_grant_types: list[str]
    callback_url: str = ""
    key_state: str = "COMPLETED"
    key_type: KeyType
    mode: str = "CREATED"
    token: ApplicationToken | None = None


class ApplicationInfo(CamelModel):
    application_id: str
    name: str
    throttling_policy: str
    description: str
    status: str = "APPROVED"
    groups: list[str] = Field(default_factory=list)
    subscription_count: int
    attributes: dict[str, str]
    owner: str
    token_type: str = "JWT"


class ApplicationOut(ApplicationInfo):
    keys: list[ApplicationKey] = Field(default_factory=list)
    subscription_scopes: list[dict[str, object]] = Field(default_factory=list)


class ApplicationList(CamelModel):
    count: int
    list: list[ApplicationInfo]
    pagination: Pagination


# --- keys and tokens ----------------------------------------------------------------------------


class KeyGenerateBody(CamelModel):
    key_type: KeyType
    grant_types_to_be_supported: list[str] = Field(default_factory=lambda: ["client_credentials"])
    callback_url: str = Field(default="", max_length=1024)
    scopes: list[str] = Field(default_factory=list)
    validity_time: int | None = Field(default=None, ge=1, le=MAX_VALIDITY)
    key_manager: str | None = None
    additional_properties: dict[str, object] = Field(default_factory=dict)

    @field_validator("key_type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("grant_types_to_be_supported")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [grant for grant in value if grant not in GRANT_TYPES]
        if unknown:
            raise ValueError(f"unknown grant type(s) {', '.join(map(repr, unknown))}")
        return list(dict.fromkeys(value)) or ["client_credentials"]

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return _check_scopes(value)


def _check_scopes(value: list[str]) -> list[str]:
    for scope in value:
        if not re.match(_SCOPE, scope):
            raise ValueError(f"{scope!r} is not a valid scope name")
    return value


class TokenGenerateBody(CamelModel):
    consumer_secret: str | None = None
    validity_period: int = Field(default=3600, ge=1, le=MAX_VALIDITY)
    scopes: list[str] = Field(default_factory=list)
    revoke_token: str | None = None
    grant_type: str | None = None

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return _check_scopes(value)


class SecretOut(CamelModel):
    consumer_key: str
    consumer_secret: str


class KeyList(CamelModel):
    count: int
    list: list[ApplicationKey]


# --- subscriptions ------------------------------------------------------------------------------


class SubscriptionBody(CamelModel):
    application_id: str = Field(min_length=1)
    api_id: str = Field(min_length=1)
    throttling_policy: str = Field(min_length=1, max_length=255)


class ApiSummary(CamelModel):
    id: str
    name: str
    context: str
    version: str
    provider: str
    life_cycle_status: str


class AppSummary(CamelModel):
    application_id: str
    name: str
    throttling_policy: str
    subscriber: str
    owner: str
    description: str = ""


class SubscriptionOut(CamelModel):
    """The developer portal's SubscriptionDTO."""

    subscription_id: str
    application_id: str
    api_id: str
    api_info: ApiSummary
    application_info: AppSummary
    throttling_policy: str
    requested_throttling_policy: str
    status: SubscriptionState


class SubscriptionList(CamelModel):
    count: int
    list: list[SubscriptionOut]
    pagination: Pagination


class PublisherSubscription(CamelModel):
    """The publisher's SubscriptionDTO (its state is ``subscriptionStatus``)."""

    subscription_id: str
    api_id: str
    application_info: AppSummary
    throttling_policy: str
    requested_throttling_policy: str
    subscription_status: SubscriptionState


class PublisherSubscriptionList(CamelModel):
    count: int
    list: list[PublisherSubscription]
    pagination: Pagination


# --- API keys -----------------------------------------------------------------------------------


class ApiKeyGenerateBody(CamelModel):
    """WSO2's APIKeyGenerateRequest. ``validityPeriod`` in seconds; -1 (or 0): never expires;
    absent: one hour. ``additionalProperties`` may restrict the key to ``permittedIP``
    (addresses / CIDR blocks) or ``permittedReferer`` (patterns with ``*``), comma-separated."""

    validity_period: int | None = None
    additional_properties: dict[str, object] = Field(default_factory=dict)


class ApiKeyOut(CamelModel):
    key_name: str
    apikey: str
    #: Seconds the key is valid for; -1 when it never expires.
    validity_time: int


class ApiKeyRevokeBody(CamelModel):
    apikey: str = Field(min_length=1, max_length=16_384)
