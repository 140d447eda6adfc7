"""Lifecycle: ``POST /apis/change-lifecycle`` and ``GET /apis/{apiId}/lifecycle-state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.auth import Publisher
from control_plane.dependencies import AdapterGateway, ApiId, DbSession
from control_plane.schemas import LifecycleChange, LifecycleState
from control_plane.services import apis as api_service
from control_plane.services import lifecycle as service

router = APIRouter(prefix="/apis", tags=["API Lifecycle"])


@router.post("/change-lifecycle", response_model=LifecycleChange)
def change_lifecycle(
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
    api_id: Annotated[str, Query(alias="apiId")],
    action: Annotated[str, Query(description=", ".join(service.ACTIONS))],
) -> LifecycleChange:
    """Move an API through its lifecycle; deployed revisions pick up the new state."""
    api = service.change(session, api_id, action, gateway)
    return LifecycleChange(lifecycle_state=service.state_of(api))


@router.get("/{apiId}/lifecycle-state", response_model=LifecycleState)
def lifecycle_state(api_id: ApiId, session: DbSession, _: Publisher) -> LifecycleState:
    return service.state_of(api_service.load(session, api_id))
