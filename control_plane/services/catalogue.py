"""The developer portal's view of APIs: only those a subscriber may see (PUBLISHED), and the
URLs and topics they connect to."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.errors import not_found
from control_plane.models import Api
from control_plane.schemas import ApiBody
from control_plane.services import apis as api_service

#: The states in which the developer portal lists an API.
VISIBLE = ("PUBLISHED",)


def search_published(
    session: Session, query: str, limit: int, offset: int
) -> tuple[list[Api], int]:
    """Published APIs whose name contains ``query`` (any case), by name and version."""
    statement = select(Api).where(Api.lifecycle_status.in_(VISIBLE))
    if query:
        statement = statement.where(func.lower(Api.name).contains(query.lower(), autoescape=True))
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = session.scalars(statement.order_by(Api.name, Api.version).limit(limit).offset(offset))
    return list(rows), total


def load_published(session: Session, api_id: str) -> Api:
    """A published API; 404 for any other (its existence is not revealed)."""
    api = api_service.load(session, api_id)
    if api.lifecycle_status not in VISIBLE:
        raise not_found("API", api_id)
    return api


def base_path(context: str, version: str) -> str:
    """Where the gateway serves an API: ``/echo`` + ``1.0.0`` -> ``/echo/1.0.0``, and a context
    holding ``{version}`` gets it substituted instead (as the adapter compiles it)."""
    path = "/" + context.strip().strip("/")
    if "{version}" in path:
        return path.replace("{version}", version)
    return f"{path}/{version}"


@dataclass(frozen=True)
class Topic:
    """One topic as a subscriber needs it: where, which direction, which scopes."""

    path: str
    verbs: tuple[str, ...]
    scopes: tuple[str, ...]
    params: tuple[str, ...]


def topics(body: ApiBody) -> list[Topic]:
    """The API's topics (SUBSCRIBE and PUBLISH of one path merged), in definition order."""
    merged: dict[str, tuple[list[str], list[str]]] = {}
    for operation in body.operations:
        verbs, scopes = merged.setdefault(operation.target, ([], []))
        if operation.verb not in verbs:
            verbs.append(operation.verb)
        scopes.extend(scope for scope in operation.scopes if scope not in scopes)
    return [
        Topic(path, tuple(verbs), tuple(scopes), tuple(path_params(path)))
        for path, (verbs, scopes) in merged.items()
    ]


def path_params(path: str) -> list[str]:
    """``/rooms/{roomId}/{x}`` -> ``["roomId", "x"]``."""
    found: list[str] = []
    for segment in path.split("/"):
        if segment.startswith("{") and segment.endswith("}") and len(segment) > 2:
            found.append(segment[1:-1])
    return found


def fill_params(path: str, values: dict[str, str]) -> str:
    """``/rooms/{roomId}`` with ``{"roomId": "lobby"}`` -> ``/rooms/lobby`` (unfilled kept)."""
    parts = []
    for segment in path.split("/"):
        name = segment[1:-1] if segment.startswith("{") and segment.endswith("}") else None
        parts.append((values.get(name) or segment) if name else segment)
    return "/".join(parts)
