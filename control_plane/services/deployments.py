"""Revisions (immutable snapshots) and where they are deployed."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import as_utc
from control_plane.definitions import to_api_definition
from control_plane.errors import ApiError, not_found
from control_plane.models import Api, ApiRevision, RevisionDeployment, utcnow
from control_plane.push import Gateway, GatewayRejected, Placement
from control_plane.schemas import DeploymentInfo, DeploymentTarget, RevisionOut
from control_plane.services import apis as api_service
from control_plane.services import environments
from wsgate_proto import definition_pb2

MAX_REVISIONS = 5

log = logging.getLogger(__name__)


#: Deployment state shown in ``deploymentInfo[].deploymentStatus``.
DEPLOYED = "DEPLOYED"
PENDING = "PENDING"


def deployment_info(
    row: RevisionDeployment, live: frozenset[Placement] | None = None
) -> DeploymentInfo:
    """WSO2's APIRevisionDeployment for one row.

    Args:
        live: where the adapter is known to run the API (``Gateway.live``). A row it does not
            cover is still on its way: ``deploymentStatus`` PENDING and no
            ``successfulDeployedTime`` (WSO2 leaves it empty until a gateway confirms). None
            when unknown (nothing is claimed either way).
    """
    deployed = as_utc(row.deployed_at)
    info = DeploymentInfo(
        revision_uuid=str(row.revision_id),
        name=row.environment,
        vhost=row.vhost,
        display_on_devportal=row.display_on_devportal,
        deployed_time=deployed,
    )
    if live is not None:
        state = row.revision.api.lifecycle_status  # a Block not yet delivered is pending too
        is_live = (row.environment, row.vhost, str(row.revision_id), state) in live
        info.deployment_status = DEPLOYED if is_live else PENDING
        info.successful_deployed_time = deployed if is_live else None
    return info


def revision_out(revision: ApiRevision, live: frozenset[Placement] | None = None) -> RevisionOut:
    return RevisionOut(
        id=str(revision.id),
        display_name=f"Revision {revision.number}",
        description=revision.description,
        created_time=as_utc(revision.created_at),
        deployment_info=[deployment_info(row, live) for row in revision.deployments],
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


#: environment -> (vhost, revision id): what one API runs where.
Plan = dict[str, tuple[str, uuid.UUID]]


def plan_of(session: Session, api_id: uuid.UUID) -> Plan:
    return {
        row.environment: (row.vhost, row.revision_id)
        for row in _rows(session, RevisionDeployment.api_id == api_id)
    }


def _definitions(
    session: Session, api: Api, plan: Plan, lifecycle_status: str = ""
) -> list[definition_pb2.ApiDefinition]:
    """One ApiDefinition per revision in ``plan``, each listing the environments it runs on
    (WSO2: each gateway environment runs its own revision of an API); ``lifecycle_status``
    overrides the API's current one."""
    by_revision: dict[uuid.UUID, list[tuple[str, str]]] = defaultdict(list)
    for environment, (vhost, revision_id) in plan.items():
        by_revision[revision_id].append((environment, vhost))
    result = []
    for revision_id, where in by_revision.items():
        revision = session.get(ApiRevision, revision_id)
        if revision is None:
            continue
        result.append(
            to_api_definition(
                str(api.id),
                revision.definition,
                lifecycle_status=lifecycle_status or api.lifecycle_status,
                deployments=where,
                revision_id=str(revision.id),
            )
        )
    return sorted(result, key=lambda d: d.revision_id)


def definitions_for_api(session: Session, api: Api) -> list[definition_pb2.ApiDefinition]:
    """What gateways should run for this API: one definition per deployed revision."""
    return _definitions(session, api, plan_of(session, api.id))


def all_definitions(session: Session) -> list[definition_pb2.ApiDefinition]:
    """Everything deployed anywhere: the body of a full Sync."""
    plans: dict[uuid.UUID, Plan] = defaultdict(dict)
    for row in _rows(session):
        plans[row.api_id][row.environment] = (row.vhost, row.revision_id)
    result = []
    for api_id, plan in plans.items():
        api = session.get(Api, api_id)
        if api is not None:
            result += _definitions(session, api, plan)
    return result


def loader(factory: sessionmaker[Session]) -> Callable[[], list[definition_pb2.ApiDefinition]]:
    """A no-argument reader for ``push.AdapterSync``, with its own session per call."""

    def load() -> list[definition_pb2.ApiDefinition]:
        with factory() as session:
            return all_definitions(session)

    return load


def api_loader(
    factory: sessionmaker[Session],
) -> Callable[[str], list[definition_pb2.ApiDefinition]]:
    """Reads what one API runs (nothing when it is gone), for ``AdapterSync.push_api``."""

    def load(api_id: str) -> list[definition_pb2.ApiDefinition]:
        with factory() as session:
            api = session.get(Api, uuid.UUID(api_id))
            return [] if api is None else definitions_for_api(session, api)

    return load


def validate(
    session: Session, gateway: Gateway, api: Api, plan: Plan, lifecycle_status: str = ""
) -> None:
    """Dry-run the API's state after a change on the adapter, then end the transaction: no
    transaction stays open during the call.

    Raises:
        ApiError: the adapter refused it (its 400 or 409); nothing is saved.
    """
    api_id = str(api.id)
    try:
        definitions = _definitions(session, api, plan, lifecycle_status)
    finally:
        session.rollback()
    if not definitions:
        return
    try:
        gateway.validate(api_id, definitions)
    except GatewayRejected as exc:
        raise ApiError(exc.status, f"the adapter refused the API: {exc.message}") from None


def commit(session: Session, what: str) -> None:
    """Commit, or roll back and answer 503 (the adapter was only asked for a dry run, so it
    serves nothing of the unsaved change).

    Raises:
        IntegrityError: a concurrent request won a unique constraint (the caller may retry).
        ApiError: 503, the database did not take the change.
    """
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise
    except SQLAlchemyError as exc:
        session.rollback()
        log.error("%s could not be saved: %s", what, exc)
        raise ApiError(503, f"{what} could not be saved; nothing was changed") from None


def deploy(
    session: Session,
    api_id: str,
    revision_id: str,
    targets: Sequence[DeploymentTarget],
    gateway: Gateway,
) -> list[RevisionDeployment]:
    """Deploy a revision to environments, replacing whatever revision of the API ran there;
    the API's other environments keep their own revisions (as in WSO2).

    The adapter checks the result first (a refusal saves nothing), the change is committed,
    and only then is it pushed; a push that misses leaves it pending until the reconciler
    delivers it.
    """
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    if api.lifecycle_status == "RETIRED":
        raise ApiError(409, f"API {api.id} is RETIRED and cannot be deployed")
    environments.check_targets(session, [(target.name, target.vhost) for target in targets])
    wanted = _unique(targets)
    key, revision_key = api.id, revision.id
    plan = plan_of(session, key)
    plan.update({target.name: (target.vhost, revision_key) for target in wanted})
    validate(session, gateway, api, plan)
    for attempt in range(3):
        now = utcnow()
        for target in wanted:
            row = session.scalar(
                select(RevisionDeployment).where(
                    RevisionDeployment.api_id == key,
                    RevisionDeployment.environment == target.name,
                )
            )
            if row is None:
                row = RevisionDeployment(api_id=key, environment=target.name)
                session.add(row)
            row.revision_id = revision_key
            row.vhost = target.vhost
            row.display_on_devportal = target.display_on_devportal
            row.deployed_at = now
        try:
            commit(session, f"deployment of revision {revision_id}")
            break
        except IntegrityError:  # a concurrent deploy added the same environment first
            if attempt == 2:
                raise ApiError(409, "a concurrent change to these deployments won; retry") from None
    gateway.push(str(key))
    return _rows(session, RevisionDeployment.revision_id == revision_key)


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
    key, revision_key = api.id, revision.id
    removed = [
        row
        for row in _rows(session, RevisionDeployment.revision_id == revision_key)
        if row.environment in names
    ]
    if removed:
        for row in removed:
            session.delete(row)
        commit(session, f"undeployment of revision {revision_id}")
        gateway.push(str(key))
    return _rows(session, RevisionDeployment.revision_id == revision_key)


def remove_all(session: Session, api: Api) -> bool:
    """Delete every deployment of ``api`` (not committed); True if there were any.

    The caller commits, then pushes the API (which then runs nowhere).
    """
    rows = _rows(session, RevisionDeployment.api_id == api.id)
    for row in rows:
        session.delete(row)
    return bool(rows)


def restore(session: Session, api_id: str, revision_id: str) -> Api:
    """Copy a revision back into the API's working copy (deployments are unchanged)."""
    api = api_service.load(session, api_id)
    revision = load_revision(session, api, revision_id)
    return api_service.replace_definition(session, api, dict(revision.definition))


def _unique(targets: Sequence[DeploymentTarget]) -> list[DeploymentTarget]:
    """The last entry wins when a body names an environment twice."""
    return list({target.name: target for target in targets}.values())
