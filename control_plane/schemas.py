"""Request and response bodies, with the field names of the WSO2 API-M v4 publisher API.

Validation lives here so that every bad field comes back as 400 naming that field; the
service layer only checks what needs the database (duplicates, lifecycle, limits).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """WSO2 JSON is camelCase; Python stays snake_case. Unknown fields are ignored, so a body
    fetched with GET can be sent back with PUT."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


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
    url: str

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

    target: str
    verb: Literal["SUBSCRIBE", "PUBLISH"]
    auth_type: str = "Any"
    throttling_policy: str = "Unlimited"
    scopes: list[str] = Field(default_factory=list)
    uri_mapping: str | None = None

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
    display_name: str = ""
    description: str = ""
    bindings: list[str] = Field(default_factory=list)


class ApiScope(CamelModel):
    scope: ScopeInfo
    shared: bool = False


def default_operations() -> list[Operation]:
    """WSO2 gives a new WebSocket API one wildcard topic in both directions."""
    return [Operation(target="/*", verb="SUBSCRIBE"), Operation(target="/*", verb="PUBLISH")]


class ApiBody(CamelModel):
    """What a publisher sends to create or update an API (and what a revision snapshots)."""

    name: str = Field(min_length=1, max_length=60)
    description: str | None = None
    context: str
    version: str
    type: Literal["WS"] = "WS"
    provider: str | None = None
    endpoint_config: EndpointConfig | None = None
    operations: list[Operation] = Field(default_factory=default_operations)
    scopes: list[ApiScope] = Field(default_factory=list)
    policies: list[str] = Field(default_factory=list)
    api_throttling_policy: str | None = None

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
