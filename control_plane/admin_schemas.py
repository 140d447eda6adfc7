"""Admin API (``/api/am/admin/v4``) bodies: throttling policies and gateway environments.

Field names follow WSO2 API-M's admin v4 API. A policy's limit is WSO2's nested
``defaultLimit: {type, eventCount: {eventCount, timeUnit, unitTime}}`` (or ``requestCount``);
the flat ``defaultLimit: {type, eventCount: 50, timeUnit, unitTime}`` is accepted on input too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from control_plane.schemas import CamelModel

TimeUnit = Literal["sec", "min", "hour", "day"]
LimitType = Literal["EVENTCOUNTLIMIT", "REQUESTCOUNTLIMIT"]
PolicyKind = Literal["subscription", "application", "api"]

POLICY_NAME = r"^[A-Za-z0-9_.-]{1,60}$"
_UNITS = {"s": "sec", "second": "sec", "m": "min", "minute": "min", "h": "hour", "d": "day"}


class EventCount(CamelModel):
    time_unit: TimeUnit = "min"
    unit_time: int = Field(default=1, ge=1, le=1_000_000)
    event_count: int = Field(ge=0, le=2**53, description="0 = unlimited")

    @field_validator("time_unit", mode="before")
    @classmethod
    def _unit(cls, value: Any) -> Any:
        return _UNITS.get(value, value) if isinstance(value, str) else value


class RequestCount(CamelModel):
    time_unit: TimeUnit = "min"
    unit_time: int = Field(default=1, ge=1, le=1_000_000)
    request_count: int = Field(ge=0, le=2**53, description="0 = unlimited")

    @field_validator("time_unit", mode="before")
    @classmethod
    def _unit(cls, value: Any) -> Any:
        return _UNITS.get(value, value) if isinstance(value, str) else value


class DefaultLimit(CamelModel):
    type: LimitType
    event_count: EventCount | None = None
    request_count: RequestCount | None = None

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        """Accept ``{type, eventCount: 50, timeUnit, unitTime}`` as well."""
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for key in ("eventCount", "requestCount"):
            count = value.get(key)
            if isinstance(count, int) and not isinstance(count, bool):
                value[key] = {
                    key: count,
                    "timeUnit": value.get("timeUnit", "min"),
                    "unitTime": value.get("unitTime", 1),
                }
        return value

    @model_validator(mode="after")
    def _matches_type(self) -> DefaultLimit:
        if self.type == "EVENTCOUNTLIMIT" and self.event_count is None:
            raise ValueError("eventCount: is required when type is EVENTCOUNTLIMIT")
        if self.type == "REQUESTCOUNTLIMIT" and self.request_count is None:
            raise ValueError("requestCount: is required when type is REQUESTCOUNTLIMIT")
        return self

    def count(self) -> tuple[int, int, str]:
        """(messages, unit time, time unit)."""
        if self.type == "EVENTCOUNTLIMIT" and self.event_count is not None:
            limit = self.event_count
            return limit.event_count, limit.unit_time, limit.time_unit
        assert self.request_count is not None
        request = self.request_count
        return request.request_count, request.unit_time, request.time_unit


class PolicyBody(CamelModel):
    """What an admin sends to create or replace a throttling policy."""

    policy_name: str = Field(pattern=POLICY_NAME)
    display_name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=1024)
    default_limit: DefaultLimit
    stop_on_quota_reach: bool = True


class PolicyOut(PolicyBody):
    policy_id: str
    type: str
    is_deployed: bool = True


class PolicyList(CamelModel):
    count: int
    list: list[PolicyOut]


class Vhost(CamelModel):
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.-]+$")
    http_context: str = ""
    ws_port: int | None = Field(default=9090, ge=1, le=65535)
    wss_port: int | None = Field(default=9095, ge=1, le=65535)


class EnvironmentBody(CamelModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    display_name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=1024)
    vhosts: list[Vhost] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_hosts(self) -> EnvironmentBody:
        hosts = [vhost.host for vhost in self.vhosts]
        if len(set(hosts)) != len(hosts):
            raise ValueError("vhosts: a host is listed twice")
        return self


class EnvironmentOut(EnvironmentBody):
    id: str
    type: str = "hybrid"
    gateway_type: str = "wsgate"
    provider: str = "wsgate"
    is_read_only: bool = False


class EnvironmentList(CamelModel):
    count: int
    list: list[EnvironmentOut]
