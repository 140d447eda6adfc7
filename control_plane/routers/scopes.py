"""``/scopes``: shared scopes (WSO2 publisher v4). Publishers read them; admins manage them,
since a shared scope's role bindings apply to every API that uses it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from control_plane.auth import Admin, Publisher
from control_plane.dependencies import DbSession
from control_plane.schemas import (
    MAX_OFFSET,
    Pagination,
    SharedScopeBody,
    SharedScopeList,
    SharedScopeOut,
)
from control_plane.services import scopes as service

router = APIRouter(prefix="/scopes", tags=["Scopes"])

ScopeId = Annotated[str, Path(alias="scopeId")]


@router.get("", response_model=SharedScopeList)
def list_scopes(
    session: DbSession,
    _: Publisher,
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SharedScopeList:
    rows, total = service.list_shared(session, limit, offset)
    return SharedScopeList(
        count=len(rows),
        list=[service.to_out(session, row) for row in rows],
        pagination=Pagination(offset=offset, limit=limit, total=total),
    )


@router.post("", status_code=201, response_model=SharedScopeOut)
def create_scope(
    body: SharedScopeBody, session: DbSession, _: Admin, response: Response
) -> SharedScopeOut:
    row = service.create(session, body)
    response.headers["Location"] = f"{router.prefix}/{row.id}"
    return service.to_out(session, row)


@router.get("/{scopeId}", response_model=SharedScopeOut)
def get_scope(scope_id: ScopeId, session: DbSession, _: Publisher) -> SharedScopeOut:
    return service.to_out(session, service.load(session, scope_id))


@router.put("/{scopeId}", response_model=SharedScopeOut)
def update_scope(
    scope_id: ScopeId, body: SharedScopeBody, session: DbSession, _: Admin
) -> SharedScopeOut:
    return service.to_out(session, service.update(session, scope_id, body))


@router.delete("/{scopeId}", status_code=200)
def delete_scope(scope_id: ScopeId, session: DbSession, _: Admin) -> dict[str, str]:
    service.delete(session, scope_id)
    return {}
