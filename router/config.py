"""Applying xDS Route snapshots: build a new table, then swap, so a NACK keeps the old one."""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from router.routes import RouteTable
from wsgate_common.resources import ROUTE_TYPE_URL
from wsgate_proto import config_pb2

log = logging.getLogger(__name__)


def build_table(resources: list[any_pb2.Any]) -> RouteTable:
    """Unpack every resource and compile them into a table.

    Raises:
        ValueError: a resource of another type, one that fails to decode, a duplicate API id or
            an invalid route.
    """
    routes: list[config_pb2.Route] = []
    seen: set[str] = set()
    for resource in resources:
        if resource.type_url != ROUTE_TYPE_URL:
            raise ValueError(f"unexpected resource type {resource.type_url!r}")
        route = config_pb2.Route()
        try:
            route.ParseFromString(resource.value)
        except DecodeError as exc:
            raise ValueError(f"resource does not decode as a Route: {exc}") from None
        if not route.api_id:
            raise ValueError("route without api_id")
        if route.api_id in seen:
            raise ValueError(f"duplicate route for API {route.api_id!r}")
        seen.add(route.api_id)
        routes.append(route)
    return RouteTable(routes)


class RouteStore:
    """The current route table and whether one has been applied yet (readiness)."""

    __slots__ = ("on_apply", "ready", "table", "version")

    def __init__(self) -> None:
        self.table = RouteTable()
        self.version = ""
        self.ready = False
        # called after each applied table (what was derived from the old one must go)
        self.on_apply: list[Callable[[], None]] = []

    def apply(self, version: str, resources: list[any_pb2.Any]) -> None:
        """xDS handler for ROUTE_TYPE_URL; raises (NACK) without touching the current table."""
        table = build_table(resources)
        self.table, self.version, self.ready = table, version, True
        for callback in self.on_apply:
            callback()
        log.info("applied routes version %s (%d APIs)", version, table.size)
