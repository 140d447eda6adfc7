"""``/apis/{apiId}/revisions`` and deploying them: ``deploy-revision``, ``undeploy-revision``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from control_plane.auth import Publisher
from control_plane.dependencies import AdapterGateway, ApiId, DbSession, RevisionPath
from control_plane.schemas import (
    ApiOut,
    DeploymentInfo,
    DeploymentTarget,
    RevisionCreate,
    RevisionList,
    RevisionOut,
)
from control_plane.services import apis as api_service
from control_plane.services import deployments as service

router = APIRouter(prefix="/apis/{apiId}", tags=["API Revisions"])

Targets = Annotated[list[DeploymentTarget], Body(min_length=1)]
RevisionQuery = Annotated[str, Query(alias="revisionId")]


@router.post("/revisions", status_code=201, response_model=RevisionOut)
def create_revision(
    api_id: ApiId,
    session: DbSession,
    _: Publisher,
    body: RevisionCreate | None = None,
) -> RevisionOut:
    """Snapshot the API as it is now (at most 5 revisions per API)."""
    revision = service.create_revision(session, api_id, body.description if body else "")
    return service.revision_out(revision)


@router.get("/revisions", response_model=RevisionList)
def list_revisions(
    api_id: ApiId,
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
    query: Annotated[str, Query(description="deployed:true lists deployed ones only")] = "",
) -> RevisionList:
    deployed_only = query.replace(" ", "").lower() == "deployed:true"
    revisions = service.list_revisions(session, api_id, deployed_only)
    live = gateway.live(str(revisions[0].api_id)) if revisions else frozenset()
    return RevisionList(
        count=len(revisions), list=[service.revision_out(r, live) for r in revisions]
    )


@router.get("/revisions/{revisionId}", response_model=RevisionOut)
def get_revision(
    api_id: ApiId,
    revision_id: RevisionPath,
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
) -> RevisionOut:
    api = service.api_service.load(session, api_id)
    revision = service.load_revision(session, api, revision_id)
    return service.revision_out(revision, gateway.live(str(api.id)))


@router.delete("/revisions/{revisionId}", status_code=200)
def delete_revision(
    api_id: ApiId, revision_id: RevisionPath, session: DbSession, _: Publisher
) -> dict[str, str]:
    """Delete a revision that is not deployed anywhere."""
    service.delete_revision(session, api_id, revision_id)
    return {}


@router.post("/deploy-revision", status_code=201, response_model=list[DeploymentInfo])
def deploy_revision(
    api_id: ApiId,
    revision_id: RevisionQuery,
    targets: Targets,
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
) -> list[DeploymentInfo]:
    """Deploy a revision to gateway environments; it replaces the API's previous revision
    there (other environments keep theirs). Answers with every environment the revision is now
    deployed on, each DEPLOYED or (adapter unreachable) PENDING."""
    rows = service.deploy(session, api_id, revision_id, targets, gateway)
    live = gateway.live(str(rows[0].api_id)) if rows else frozenset()
    return [service.deployment_info(row, live) for row in rows]


@router.post("/undeploy-revision", status_code=201, response_model=list[DeploymentInfo])
def undeploy_revision(
    api_id: ApiId,
    revision_id: RevisionQuery,
    targets: Targets,
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
) -> list[DeploymentInfo]:
    """Remove a revision from gateway environments; answers with where it still runs."""
    rows = service.undeploy(session, api_id, revision_id, targets, gateway)
    live = gateway.live(str(rows[0].api_id)) if rows else frozenset()
    return [service.deployment_info(row, live) for row in rows]


@router.post("/restore-revision", status_code=201, response_model=ApiOut)
def restore_revision(
    api_id: ApiId, revision_id: RevisionQuery, session: DbSession, _: Publisher
) -> ApiOut:
    """Make a revision's snapshot the API's working copy again (nothing is redeployed)."""
    return api_service.to_out(service.restore(session, api_id, revision_id))
