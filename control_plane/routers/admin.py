"""Admin API (``/api/am/admin/v4``): throttling policies and gateway environments."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Response

from control_plane.admin_schemas import (
    EnvironmentBody,
    EnvironmentList,
    EnvironmentOut,
    PolicyBody,
    PolicyKind,
    PolicyList,
    PolicyOut,
)
from control_plane.auth import Admin
from control_plane.dependencies import AdapterGateway, DbSession
from control_plane.services import environments, policies

ADMIN_PREFIX = "/api/am/admin/v4"

router = APIRouter(tags=["Admin"])

PolicyId = Annotated[str, Path(alias="policyId")]
EnvironmentId = Annotated[str, Path(alias="environmentId")]

#: URL segment -> kind of policy (WSO2 calls API-level policies "advanced").
_SEGMENTS: dict[str, PolicyKind] = {
    "subscription": "subscription",
    "application": "application",
    "advanced": "api",
}


def _policy_routes(segment: str, kind: PolicyKind) -> None:
    base = f"/throttling/policies/{segment}"
    tag: list[str | Enum] = [f"Throttling policies ({segment})"]

    @router.get(base, response_model=PolicyList, tags=tag, name=f"list_{segment}_policies")
    def list_all(session: DbSession, _: Admin) -> PolicyList:
        rows = policies.list_policies(session, kind)
        return PolicyList(count=len(rows), list=[policies.to_out(row) for row in rows])

    @router.post(
        base, status_code=201, response_model=PolicyOut, tags=tag, name=f"add_{segment}_policy"
    )
    def add(
        body: PolicyBody,
        session: DbSession,
        gateway: AdapterGateway,
        _: Admin,
        response: Response,
    ) -> PolicyOut:
        row = policies.create(session, kind, body)
        gateway.subscriptions_changed()
        response.headers["Location"] = f"{ADMIN_PREFIX}{base}/{row.id}"
        return policies.to_out(row)

    @router.get(f"{base}/{{policyId}}", response_model=PolicyOut, tags=tag, name=f"get_{segment}")
    def get(policy_id: PolicyId, session: DbSession, _: Admin) -> PolicyOut:
        return policies.to_out(policies.load(session, kind, policy_id))

    @router.put(f"{base}/{{policyId}}", response_model=PolicyOut, tags=tag, name=f"put_{segment}")
    def put(
        policy_id: PolicyId,
        body: PolicyBody,
        session: DbSession,
        gateway: AdapterGateway,
        _: Admin,
    ) -> PolicyOut:
        row = policies.update(session, kind, policy_id, body)
        gateway.subscriptions_changed()
        return policies.to_out(row)

    @router.delete(f"{base}/{{policyId}}", tags=tag, name=f"delete_{segment}")
    def delete(
        policy_id: PolicyId, session: DbSession, gateway: AdapterGateway, _: Admin
    ) -> dict[str, str]:
        policies.delete(session, kind, policy_id)
        gateway.subscriptions_changed()
        return {}


for _segment, _kind in _SEGMENTS.items():
    _policy_routes(_segment, _kind)


@router.get("/environments", response_model=EnvironmentList, tags=["Environments"])
def list_environments(session: DbSession, _: Admin) -> EnvironmentList:
    rows = environments.list_environments(session)
    return EnvironmentList(count=len(rows), list=[environments.to_out(row) for row in rows])


@router.post("/environments", status_code=201, response_model=EnvironmentOut, tags=["Environments"])
def add_environment(body: EnvironmentBody, session: DbSession, _: Admin) -> EnvironmentOut:
    return environments.to_out(environments.create(session, body))


@router.get("/environments/{environmentId}", response_model=EnvironmentOut, tags=["Environments"])
def get_environment(environment_id: EnvironmentId, session: DbSession, _: Admin) -> EnvironmentOut:
    return environments.to_out(environments.load(session, environment_id))


@router.put("/environments/{environmentId}", response_model=EnvironmentOut, tags=["Environments"])
def put_environment(
    environment_id: EnvironmentId, body: EnvironmentBody, session: DbSession, _: Admin
) -> EnvironmentOut:
    return environments.to_out(environments.update(session, environment_id, body))


@router.delete("/environments/{environmentId}", tags=["Environments"])
def delete_environment(
    environment_id: EnvironmentId, session: DbSession, _: Admin
) -> dict[str, str]:
    environments.delete(session, environment_id)
    return {}
