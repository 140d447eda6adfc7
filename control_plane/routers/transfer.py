"""``POST /apis/import-asyncapi`` and ``GET /apis/export``: APIs in and out as documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from control_plane.auth import Publisher, is_admin
from control_plane.dependencies import DbSession
from control_plane.errors import ApiError
from control_plane.export import project_zip
from control_plane.importing import parse_import
from control_plane.models import RevisionDeployment
from control_plane.schemas import ApiOut
from control_plane.services import apis as service
from control_plane.services import deployments
from control_plane.settings import ControlPlaneSettings
from wsgate_common.documents import DocumentError, load_in_worker

router = APIRouter(prefix="/apis", tags=["Import and Export"])

#: The setting that raises each budget, named in a 413 answer.
_SETTINGS = {
    "bytes": "WSGATE_CP_DOCUMENT_MAX_BYTES",
    "values": "WSGATE_CP_DOCUMENT_MAX_NODES",
    "deeper": "WSGATE_CP_DOCUMENT_MAX_NODES",
    "longer": "WSGATE_CP_DOCUMENT_TIMEOUT",
}


def _too_large(exc: DocumentError) -> ApiError:
    setting = next((name for word, name in _SETTINGS.items() if word in exc.message), "")
    return ApiError(413, f"file: {exc.message}" + (f"; see {setting}" if setting else ""))


@router.post("/import-asyncapi", status_code=201, response_model=ApiOut)
async def import_asyncapi(
    request: Request,
    session: DbSession,
    user: Publisher,
    response: Response,
    file: Annotated[UploadFile | None, File(description="AsyncAPI 2.x, YAML or JSON")] = None,
    additional_properties: Annotated[
        str | None,
        Form(alias="additionalProperties", description="JSON: name, context, version, ..."),
    ] = None,
) -> ApiOut:
    """Create a WebSocket API from an AsyncAPI document; its channels become the topics."""
    if file is None:
        raise ApiError(400, "file: an AsyncAPI document is required (multipart field 'file')")
    settings: ControlPlaneSettings = request.app.state.settings
    budget = settings.document_budget
    content = await file.read(budget.max_bytes + 1)
    try:
        body = await load_in_worker(
            parse_import, content, additional_properties, budget, budget=budget
        )
    except DocumentError as exc:
        raise _too_large(exc) from None
    if isinstance(body, str):
        raise ApiError(400, body)
    api = await run_in_threadpool(service.create, session, body, user, is_admin(request, user))
    response.headers["Location"] = f"{router.prefix}/{api.id}"
    return service.to_out(api)


@router.get("/export", response_class=Response)
def export_api(
    session: DbSession,
    _: Publisher,
    api_id: Annotated[str, Query(alias="apiId")],
    revision_id: Annotated[str | None, Query(alias="revisionId")] = None,
    format: Annotated[str, Query(description="YAML (JSON is not offered)")] = "YAML",
) -> Response:
    """The API (or one revision of it) as a WSO2 API project zip."""
    if format.upper() != "YAML":
        raise ApiError(400, f"format: {format!r} is not supported; use YAML")
    api = service.load(session, api_id)
    snapshot = api.definition
    if revision_id:
        snapshot = deployments.load_revision(session, api, revision_id).definition
    rows = session.scalars(select(RevisionDeployment).where(RevisionDeployment.api_id == api.id))
    name, data = project_zip(
        dict(snapshot),
        api_id=str(api.id),
        lifecycle_status=api.lifecycle_status,
        deployments=[(row.environment, row.vhost, row.display_on_devportal) for row in rows],
    )
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
