"""``/apis``: create, list, read, update and delete APIs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from control_plane.auth import Publisher, is_admin
from control_plane.dependencies import AdapterGateway, ApiId, DbSession
from control_plane.schemas import MAX_OFFSET, MAX_QUERY, ApiBody, ApiList, ApiOut, Pagination
from control_plane.services import apis as service

router = APIRouter(prefix="/apis", tags=["APIs"])


@router.post("", status_code=201, response_model=ApiOut, response_model_by_alias=True)
def create_api(
    request: Request, body: ApiBody, session: DbSession, user: Publisher, response: Response
) -> ApiOut:
    """Create a WebSocket API in state CREATED (it runs nowhere until a revision is deployed).
    ``provider`` is the caller unless an admin names another user."""
    api = service.create(session, body, user, admin=is_admin(request, user))
    response.headers["Location"] = f"{router.prefix}/{api.id}"
    return service.to_out(api)


@router.get("", response_model=ApiList)
def list_apis(
    session: DbSession,
    _: Publisher,
    query: Annotated[
        str, Query(max_length=MAX_QUERY, description="free text, or name:x context:x status:x ...")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ApiList:
    found, total = service.search(session, query, limit, offset)
    return ApiList(
        count=len(found),
        list=[service.to_info(api) for api in found],
        pagination=Pagination(offset=offset, limit=limit, total=total),
    )


@router.get("/{apiId}", response_model=ApiOut)
def get_api(api_id: ApiId, session: DbSession, _: Publisher) -> ApiOut:
    return service.to_out(service.load(session, api_id))


@router.put("/{apiId}", response_model=ApiOut)
def update_api(
    request: Request, api_id: ApiId, body: ApiBody, session: DbSession, user: Publisher
) -> ApiOut:
    """Replace the working copy; create and deploy a revision to take it to gateways."""
    return service.to_out(service.update(session, api_id, body, admin=is_admin(request, user)))


@router.delete("/{apiId}", status_code=200)
def delete_api(
    api_id: ApiId, session: DbSession, gateway: AdapterGateway, _: Publisher
) -> dict[str, str]:
    """Delete an API, its revisions, and undeploy it from every gateway."""
    service.delete(session, api_id, gateway)
    return {}
