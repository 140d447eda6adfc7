"""Request and response bodies, with the field names of the WSO2 API-M v4 publisher API.

Validation lives here so that every bad field comes back as 400 naming that field; the
service layer only checks what needs the database (duplicates, lifecycle, limits).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from wsgate_common.resources import COMPRESSION_MODES, COMPRESSION_PROPERTY


class CamelModel(BaseModel):
    """WSO2 JSON is camelCase; Python stays snake_case. Unknown fields are ignored, so a body
    fetched with GET can be sent back with PUT."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


# --- bounds on free-form fields (issue 12): a real API fits many times over -----------------------

#: A name-like value: a tier, a role, a scope, a topic, a provider.
ShortText = Annotated[str, StringConstraints(max_length=255)]
MAX_API_DESCRIPTION = 4096
MAX_TEXT = 1024
MAX_URL = 2048
MAX_OPERATIONS = 1000
MAX_SCOPES = 200
MAX_LIST = 50

# --- APIs -------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~-]+|\{version\})$")
_TOPIC_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~*-]+|\{[A-Za-z0-9_]+\})$")
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,30}$")
_NAME_FORBIDDEN = set("~!@#;:%^*()+={}|\\<>\"',&$[]/")


def normalise_context(value: str) -> str:
    """``"echo/"`` -> ``"/echo"``; every segment must be URL-safe (or ``{version}``).

    Raises:
        ValueError: empty, or a segment with characters that need escaping in a URL.
    """
    segments = [part for part in value.strip().split("/") if part]
    if not segments:
        raise ValueError("must name at least one path segment, e.g. /echo")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise ValueError(
                f"segment {segment!r} may contain only letters, digits, '.', '_', '~', '-'"
                " (or be {version})"
            )
    return "/" + "/".join(segments)


class EndpointUrl(BaseModel):
    url: str = Field(max_length=MAX_URL)

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL with a host")
        return value


class EndpointConfig(BaseModel):
    """Kept in WSO2's own snake_case."""

    endpoint_type: Literal["ws"] = "ws"
    production_endpoints: EndpointUrl | None = None
    sandbox_endpoints: EndpointUrl | None = None


class Operation(CamelModel):
    """One topic (AsyncAPI channel) and direction."""

    target: str = Field(max_length=255)
    verb: Literal["SUBSCRIBE", "PUBLISH"]
    auth_type: str = Field(default="Any", max_length=32)
    throttling_policy: str = Field(default="Unlimited", max_length=255)
    scopes: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST)
    uri_mapping: str | None = Field(default=None, max_length=255)

    @field_validator("verb", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("target")
    @classmethod
    def _topic(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("/"):
            value = "/" + value
        for segment in value.split("/")[1:]:
            if segment and not _TOPIC_SEGMENT.match(segment):
                raise ValueError(f"topic segment {segment!r} is not URL-safe")
        return value


class ScopeInfo(CamelModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_:.\-/]+$")
    display_name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=MAX_TEXT)
    bindings: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST)


class ApiScope(CamelModel):
    scope: ScopeInfo
    shared: bool = False


# --- security schemes and CORS (WSO2 securityScheme / corsConfiguration) ------------------------

#: The credential kinds a gateway checks; WSO2's other names ("mutualssl", "basic_auth", ...)
#: are kept as given but grant nothing here.
OAUTH2 = "oauth2"
API_KEY = "api_key"
CREDENTIAL_SCHEMES = (OAUTH2, API_KEY)
MAX_SECURITY_SCHEMES = 16
MAX_CORS_ORIGINS = 100
MAX_ORIGIN_LENGTH = 255
MAX_CORS_ITEMS = 50
MAX_CORS_ITEM_LENGTH = 100
_SCHEME_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_HTTP_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def normalise_origin(value: str) -> str:
    """``"*"`` or ``scheme://host[:port]`` (a lone trailing ``/`` is dropped), lower-cased as
    browsers send it in ``Origin``.

    Raises:
        ValueError: anything else: a path, query, user info, a wildcard host, a bad port.
    """
    value = value.strip()
    if value == "*":
        return value
    if len(value) > MAX_ORIGIN_LENGTH:
        raise ValueError(f"origin longer than {MAX_ORIGIN_LENGTH} characters")
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not _URL_SCHEME.match(scheme):
        raise ValueError(f"origin {value!r} is not '*' nor scheme://host[:port]")
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(char in rest for char in "/?#@\\ ") or not rest:
        raise ValueError(f"origin {value!r} must be scheme://host[:port] without path or query")
    host, port = rest, ""
    if rest.startswith("["):
        host, bracket, after = rest.partition("]")
        host += bracket
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"origin {value!r} has a malformed IPv6 host")
        port = after[1:]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"origin {value!r} has a malformed IPv6 host") from None
    else:
        host, _, port = rest.partition(":")
        if not _HOST_NAME.match(host.lower()):
            raise ValueError(f"origin {value!r} has an invalid host name")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"origin {value!r} has an invalid port")
    return f"{scheme}://{host.lower()}" + (f":{int(port)}" if port else "")


def _bounded_tokens(values: list[str], what: str) -> list[str]:
    if len(values) > MAX_CORS_ITEMS:
        raise ValueError(f"at most {MAX_CORS_ITEMS} {what} (got {len(values)})")
    found: list[str] = []
    for value in values:
        value = value.strip()
        if len(value) > MAX_CORS_ITEM_LENGTH or not _HTTP_TOKEN.match(value):
            raise ValueError(
                f"{value[:MAX_CORS_ITEM_LENGTH]!r} is not a header/method name"
                f" (at most {MAX_CORS_ITEM_LENGTH} token characters)"
            )
        if value not in found:
            found.append(value)
    return found


def _default_allow_headers() -> list[str]:
    return ["authorization", "Access-Control-Allow-Origin", "Content-Type", "apikey"]


def _default_allow_methods() -> list[str]:
    return ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]


class CorsConfiguration(CamelModel):
    """WSO2's ``corsConfiguration``. For a WebSocket API only the origins matter: an upgrade
    whose ``Origin`` is not among them is refused (when enabled; else the gateway default)."""

    cors_configuration_enabled: bool = False
    access_control_allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    access_control_allow_credentials: bool = False
    access_control_allow_headers: list[str] = Field(default_factory=_default_allow_headers)
    access_control_allow_methods: list[str] = Field(default_factory=_default_allow_methods)

    @field_validator("access_control_allow_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        if len(values) > MAX_CORS_ORIGINS:
            raise ValueError(f"at most {MAX_CORS_ORIGINS} origins (got {len(values)})")
        found: list[str] = []
        for value in values:
            origin = normalise_origin(value)
            if origin not in found:
                found.append(origin)
        return found

    @field_validator("access_control_allow_headers")
    @classmethod
    def _headers(cls, values: list[str]) -> list[str]:
        return _bounded_tokens(values, "headers")

    @field_validator("access_control_allow_methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        return [method.upper() for method in _bounded_tokens(values, "methods")]


def default_security_scheme() -> list[str]:
    """WSO2's default: OAuth2 access tokens only."""
    return [OAUTH2]


def check_security_scheme(values: list[str]) -> list[str]:
    """Stripped, without duplicates, in the order given.

    Raises:
        ValueError: too many or malformed entries, or neither ``oauth2`` nor ``api_key``.
    """
    if len(values) > MAX_SECURITY_SCHEMES:
        raise ValueError(f"at most {MAX_SECURITY_SCHEMES} entries (got {len(values)})")
    found: list[str] = []
    for value in values:
        value = value.strip()
        if not _SCHEME_NAME.match(value):
            raise ValueError(f"{value[:64]!r} is not a scheme name (1-64 letters, digits, _ . -)")
        if value not in found:
            found.append(value)
    if not any(value in CREDENTIAL_SCHEMES for value in found):
        raise ValueError(
            'must include "oauth2" or "api_key" (or both); other schemes such as'
            ' "mutualssl" are kept but let no client in'
        )
    return found


# --- additional properties (WSO2 additionalProperties) ------------------------------------------

MAX_ADDITIONAL_PROPERTIES = 50


class AdditionalProperty(CamelModel):
    """One of WSO2's free-form API properties (``{name, value, display}``; ``display`` shows it
    on the developer portal). wsgate reads one of them: ``wsgate.compression``."""

    name: str = Field(min_length=1, max_length=255)
    value: str = Field(default="", max_length=MAX_TEXT)
    display: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _known_compression(self) -> AdditionalProperty:
        """``wsgate.compression`` is ``passthrough`` or ``strip`` (kept stripped, lower-case)."""
        if self.name == COMPRESSION_PROPERTY:
            mode = self.value.strip().lower()
            if mode not in COMPRESSION_MODES:
                raise ValueError(
                    f"{COMPRESSION_PROPERTY} must be 'passthrough' or 'strip'"
                    f" (got {self.value[:64]!r})"
                )
            self.value = mode
        return self


def check_additional_properties(values: list[AdditionalProperty]) -> list[AdditionalProperty]:
    """Names are unique: WSO2 keys the properties by name (``additionalPropertiesMap``).

    Raises:
        ValueError: a name listed twice.
    """
    seen: set[str] = set()
    for index, prop in enumerate(values):
        if prop.name in seen:
            raise ValueError(f"[{index}]: property {prop.name[:64]!r} is listed twice")
        seen.add(prop.name)
    return values


def default_operations() -> list[Operation]:
    """WSO2 gives a new WebSocket API one wildcard topic in both directions."""
    return [Operation(target="/*", verb="SUBSCRIBE"), Operation(target="/*", verb="PUBLISH")]


class ApiBody(CamelModel):
    """What a publisher sends to create or update an API (and what a revision snapshots)."""

    name: str = Field(min_length=1, max_length=60)
    description: str | None = Field(default=None, max_length=MAX_API_DESCRIPTION)
    context: str = Field(max_length=255)
    version: str = Field(max_length=30)
    type: Literal["WS"] = "WS"
    provider: str | None = Field(default=None, max_length=255)
    endpoint_config: EndpointConfig | None = None
    operations: list[Operation] = Field(
        default_factory=default_operations, max_length=MAX_OPERATIONS
    )
    scopes: list[ApiScope] = Field(default_factory=list, max_length=MAX_SCOPES)
    policies: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST)
    api_throttling_policy: str | None = Field(default=None, max_length=255)
    security_scheme: list[str] = Field(default_factory=default_security_scheme)
    cors_configuration: CorsConfiguration = Field(default_factory=CorsConfiguration)
    additional_properties: list[AdditionalProperty] = Field(
        default_factory=list, max_length=MAX_ADDITIONAL_PROPERTIES
    )

    @field_validator("additional_properties", mode="before")
    @classmethod
    def _properties_default(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("additional_properties")
    @classmethod
    def _additional_properties(cls, value: list[AdditionalProperty]) -> list[AdditionalProperty]:
        return check_additional_properties(value)

    def compression(self) -> str:
        """The API's ``wsgate.compression`` property: "passthrough", "strip", or "" (unset:
        the router's WSGATE_ROUTER_COMPRESSION decides)."""
        for prop in self.additional_properties:
            if prop.name == COMPRESSION_PROPERTY:
                return prop.value
        return ""

    @field_validator("security_scheme", mode="before")
    @classmethod
    def _scheme_default(cls, value: Any) -> Any:
        return default_security_scheme() if value is None else value

    @field_validator("security_scheme")
    @classmethod
    def _security_scheme(cls, value: list[str]) -> list[str]:
        return check_security_scheme(value)

    @field_validator("cors_configuration", mode="before")
    @classmethod
    def _cors_default(cls, value: Any) -> Any:
        return CorsConfiguration() if value is None else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        bad = sorted(_NAME_FORBIDDEN.intersection(value))
        if not value or bad:
            raise ValueError(f"must be non-blank and not contain {' '.join(bad) or 'only spaces'}")
        return value

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        return normalise_context(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value.strip()
        if not _VERSION.match(value):
            raise ValueError("must be 1-30 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _type_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _operations_consistent(self) -> ApiBody:
        declared = {item.scope.name for item in self.scopes}
        seen: set[tuple[str, str]] = set()
        for index, operation in enumerate(self.operations):
            key = (operation.target, operation.verb)
            if key in seen:
                raise ValueError(f"operations[{index}]: {key[1]} {key[0]} is listed twice")
            seen.add(key)
            for scope in operation.scopes:
                if scope not in declared:
                    raise ValueError(
                        f"operations[{index}].scopes: scope {scope!r} is not declared in scopes"
                    )
        return self

    def document(self) -> dict[str, Any]:
        """The JSON stored in the database (apis.definition and revision snapshots)."""
        return self.model_dump(mode="json", by_alias=True)


class ApiOut(ApiBody):
    id: str
    life_cycle_status: str
    created_time: datetime
    last_updated_time: datetime


class ApiInfo(CamelModel):
    id: str
    name: str
    description: str | None = None
    context: str
    version: str
    type: str
    provider: str
    life_cycle_status: str
    created_time: datetime
    updated_time: datetime


#: ``offset`` beyond this is a 400 (a database would overflow on ~1e20), and so is a search
#: ``query`` longer than MAX_QUERY characters.
MAX_OFFSET = 1_000_000
MAX_QUERY = 256


class Pagination(CamelModel):
    offset: int
    limit: int
    total: int
    next: str = ""
    previous: str = ""


class ApiList(CamelModel):
    count: int
    list: list[ApiInfo]
    pagination: Pagination


# --- lifecycle --------------------------------------------------------------------------------


class Transition(CamelModel):
    event: str
    target_state: str


class LifecycleState(CamelModel):
    state: str
    check_items: list[str] = Field(default_factory=list)
    available_transitions: list[Transition] = Field(default_factory=list)


class LifecycleChange(CamelModel):
    """WSO2's WorkflowResponse: without approval workflows every change is APPROVED at once."""

    workflow_status: str = "APPROVED"
    json_payload: str = ""
    lifecycle_state: LifecycleState


# --- revisions and deployments ----------------------------------------------------------------


class RevisionCreate(CamelModel):
    description: str = Field(default="", max_length=255)


class DeploymentTarget(CamelModel):
    """One gateway environment (a gateway label) in a deploy/undeploy-revision body."""

    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    vhost: str = Field(default="localhost", min_length=1, max_length=255)
    display_on_devportal: bool = True


class DeploymentInfo(CamelModel):
    revision_uuid: str
    name: str
    vhost: str
    display_on_devportal: bool
    deployed_time: datetime
    #: Set once the gateway runs it (WSO2 leaves it empty until a gateway confirms).
    successful_deployed_time: datetime | None = None
    #: Workflow state, as in WSO2 (no approval workflow here: always APPROVED).
    status: str = "APPROVED"
    #: DEPLOYED once the gateway runs this revision here; PENDING while the control plane is
    #: still delivering it (adapter unreachable or refusing): the database has it, and the
    #: reconciler retries until the gateway matches.
    deployment_status: str | None = None


class RevisionOut(CamelModel):
    id: str
    display_name: str
    description: str
    created_time: datetime
    deployment_info: list[DeploymentInfo]


class RevisionList(CamelModel):
    count: int
    list: list[RevisionOut]


# --- shared scopes ----------------------------------------------------------------------------


class SharedScopeBody(CamelModel):
    """WSO2's ScopeDTO for ``/scopes``."""

    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_:.\-/]+$")
    display_name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=1024)
    bindings: list[str] = Field(default_factory=list, max_length=50)


class SharedScopeOut(SharedScopeBody):
    id: str
    usage_count: int


class SharedScopeList(CamelModel):
    count: int
    list: list[SharedScopeOut]
    pagination: Pagination
