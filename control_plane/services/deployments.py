"""Revisions (immutable snapshots) and where they are deployed."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import as_utc
from control_plane.definitions import to_api_definition
from control_plane.errors import ApiError, not_found
from control_plane.models import Api, ApiRevision, RevisionDeployment, utcnow
from control_plane.push import Gateway, GatewayRejected
from control_plane.schemas import DeploymentInfo, DeploymentTarget, RevisionOut
from control_plane.services import apis as api_service
from control_plane.services import environments
from wsgate_proto import definition_pb2

MAX_REVISIONS = 5


def deployment_info(row: RevisionDeployment) -> DeploymentInfo:
    deployed = as_utc(row.deployed_at)
    return DeploymentInfo(
        revision_uuid=str(row.revision_id),
        name=row.environment,
        vhost=row.vhost,
        display_on_devportal=row.display_on_devportal,
        deployed_time=deployed,
        successful_deployed_time=deployed,
    )


def revision_out(revision: ApiRevision) -> RevisionOut:
    return RevisionOut(
        id=str(revision.id),
        display_name=f"Revision {revision.number}",
        description=revision.description,
        created_time=as_utc(revision.created_at),
        deployment_info=[deployment_info(row) for row in revision.deployments],
    )


def load_revision(session: Session, api: Api, revision_id: str) -> ApiRevision:
    try:
        key = uuid.UUID(revision_id)
    except ValueError:
        raise not_found("revision", revision_id) from None
    revision = session.get(ApiRevision, key)
    if revision is None or revision.api_id != api.id:
        raise not_found("revision", f"{revision_id} of API {api.id}")
    return revision


def create_revision(session: Session, api_id: str, description: str) -> ApiRevision:
    """Snapshot the working copy. Numbers are never reused, as in WSO2."""
    api = api_service.load(session, api_id)
    count, highest = session.execute(
        select(func.count(), func.max(ApiRevision.number)).where(ApiRevision.api_id == api.id)
    ).one()
    if count >= MAX_REVISIONS:
        raise ApiError(
            400,
            f"API {api.id} already has the maximum of {MAX_REVISIONS} revisions;"
            " delete an undeployed one first",
        )
    revision = ApiRevision(
        id=uuid.uuid4(),
        api_id=api.id,
        number=(highest or 0) + 1,
        description=description,
        definition=dict(api.definition),
        created_at=utcnow(),
    )
    session.add(revision)
    session.commit()
    session.refresh(revision)
    return revision


def list_revisions(session: Session, api_id: str, deployed_only: bool) -> list[ApiRevision]:
    api = api_service.load(session, api_id)
    return [r for r in api.revisions if r.deployments or not deployed_only]


def delete_revision(session: Session, api_id: str, revision_id: str) -> None:
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    if revision.deployments:
        names = ", ".join(row.environment for row in revision.deployments)
        raise ApiError(400, f"revision {revision.number} is deployed on {names}; undeploy it first")
    session.delete(revision)
    session.commit()


def _rows(session: Session, *where: ColumnElement[bool]) -> list[RevisionDeployment]:
    statement = select(RevisionDeployment).where(*where)
    return list(session.scalars(statement.order_by(RevisionDeployment.environment)))


def _group(
    session: Session, rows: Sequence[RevisionDeployment]
) -> list[definition_pb2.ApiDefinition]:
    """One ApiDefinition per API, listing every environment it runs on.

    The adapter holds one definition per API id, so all environments of an API run one
    revision; ``deploy`` keeps it that way, and should rows disagree anyway, the most recently
    deployed revision wins.
    """
    by_api: dict[uuid.UUID, list[RevisionDeployment]] = defaultdict(list)
    for row in rows:
        by_api[row.api_id].append(row)
    result = []
    for group in by_api.values():
        newest = max(group, key=lambda row: as_utc(row.deployed_at))
        revision = session.get(ApiRevision, newest.revision_id)
        if revision is None:
            continue
        result.append(
            to_api_definition(
                str(revision.api_id),
                revision.definition,
                lifecycle_status=revision.api.lifecycle_status,
                deployments=[(row.environment, row.vhost) for row in group],
                revision_id=str(revision.id),
            )
        )
    return result


def definitions_for_api(session: Session, api: Api) -> list[definition_pb2.ApiDefinition]:
    """What gateways should run for this API: nothing, or one definition."""
    return _group(session, _rows(session, RevisionDeployment.api_id == api.id))


def all_definitions(session: Session) -> list[definition_pb2.ApiDefinition]:
    """Everything deployed anywhere: the body of a full Sync."""
    return _group(session, _rows(session))


def loader(factory: sessionmaker[Session]) -> Callable[[], list[definition_pb2.ApiDefinition]]:
    """A no-argument reader for ``push.AdapterSync``, with its own session per call."""

    def load() -> list[definition_pb2.ApiDefinition]:
        with factory() as session:
            return all_definitions(session)

    return load


def _refused(session: Session, exc: GatewayRejected) -> ApiError:
    session.rollback()
    return ApiError(exc.status, f"the adapter refused the API: {exc.message}")


def deploy(
    session: Session,
    api_id: str,
    revision_id: str,
    targets: Sequence[DeploymentTarget],
    gateway: Gateway,
) -> list[RevisionDeployment]:
    """Deploy a revision to environments, replacing whatever revision of the API ran there.

    Gateways hold one definition per API, so the API's other environments move to this
    revision as well (unlike WSO2, where each environment may run its own revision). The
    adapter hears of it before the commit: if it refuses, nothing is saved.
    """
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    if api.lifecycle_status == "RETIRED":
        raise ApiError(409, f"API {api.id} is RETIRED and cannot be deployed")
    environments.check_targets(session, [(target.name, target.vhost) for target in targets])
    now = utcnow()
    for current in _rows(session, RevisionDeployment.api_id == api.id):
        current.revision_id = revision.id
        current.deployed_at = now
    for target in _unique(targets):
        row = session.scalar(
            select(RevisionDeployment).where(
                RevisionDeployment.api_id == api.id,
                RevisionDeployment.environment == target.name,
            )
        )
        if row is None:
            row = RevisionDeployment(api_id=api.id, environment=target.name)
            session.add(row)
        row.revision_id = revision.id
        row.vhost = target.vhost
        row.display_on_devportal = target.display_on_devportal
        row.deployed_at = now
    session.flush()
    try:
        for definition in definitions_for_api(session, api):
            gateway.deploy(definition)
    except GatewayRejected as exc:
        raise _refused(session, exc) from None
    session.commit()
    gateway.changed()
    return _rows(session, RevisionDeployment.revision_id == revision.id)


def undeploy(
    session: Session,
    api_id: str,
    revision_id: str,
    targets: Sequence[DeploymentTarget],
    gateway: Gateway,
) -> list[RevisionDeployment]:
    """Take a revision off some environments; environments it is not on are ignored."""
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    names = {target.name for target in targets}
    removed = [
        row
        for row in _rows(session, RevisionDeployment.revision_id == revision.id)
        if row.environment in names
    ]
    if removed:
        for row in removed:
            session.delete(row)
        session.flush()
        try:
            gateway.undeploy(str(api.id), [row.environment for row in removed])
        except GatewayRejected as exc:
            raise _refused(session, exc) from None
        session.commit()
        gateway.changed()
    return _rows(session, RevisionDeployment.revision_id == revision.id)


def remove_all(session: Session, api: Api, gateway: Gateway) -> bool:
    """Undeploy every revision of ``api`` everywhere (not committed); True if there were any.

    Raises:
        GatewayRejected: the adapter refused (the caller rolls back).
    """
    rows = _rows(session, RevisionDeployment.api_id == api.id)
    for row in rows:
        session.delete(row)
    if rows:
        session.flush()
        gateway.undeploy(str(api.id))
    return bool(rows)


def restore(session: Session, api_id: str, revision_id: str) -> Api:
    """Copy a revision back into the API's working copy (deployments are unchanged)."""
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    return api_service.replace_definition(session, api, dict(revision.definition))


def _unique(targets: Sequence[DeploymentTarget]) -> list[DeploymentTarget]:
    """The last entry wins when a body names an environment twice."""
    return list({target.name: target for target in targets}.values())
