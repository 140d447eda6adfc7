"""Gateway environments (labels with their vhosts) that revisions deploy to."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.admin_schemas import EnvironmentBody, EnvironmentOut, Vhost
from control_plane.errors import ApiError, not_found
from control_plane.models import Environment, RevisionDeployment


def to_out(row: Environment) -> EnvironmentOut:
    return EnvironmentOut(
        id=str(row.id),
        name=row.name,
        display_name=row.display_name or row.name,
        description=row.description,
        vhosts=[Vhost.model_validate(vhost) for vhost in row.vhosts],
        is_read_only=row.read_only,
    )


def list_environments(session: Session) -> list[Environment]:
    return list(session.scalars(select(Environment).order_by(Environment.name)))


def by_name(session: Session) -> dict[str, Environment]:
    return {row.name: row for row in list_environments(session)}


def load(session: Session, environment_id: str) -> Environment:
    try:
        key = uuid.UUID(environment_id)
    except ValueError:
        raise not_found("environment", environment_id) from None
    row = session.get(Environment, key)
    if row is None:
        raise not_found("environment", environment_id)
    return row


def _vhosts(body: EnvironmentBody) -> list[dict[str, object]]:
    return [vhost.model_dump(mode="json", by_alias=True) for vhost in body.vhosts]


def create(session: Session, body: EnvironmentBody) -> Environment:
    if session.scalar(select(Environment.id).where(Environment.name == body.name)):
        raise ApiError(409, f"an environment named {body.name!r} already exists")
    row = Environment(
        id=uuid.uuid4(),
        name=body.name,
        display_name=body.display_name or body.name,
        description=body.description,
        vhosts=_vhosts(body),
        read_only=False,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"an environment named {body.name!r} already exists") from None
    return row


def _writable(row: Environment) -> None:
    if row.read_only:
        raise ApiError(409, f"environment {row.name!r} is read-only")


def update(session: Session, environment_id: str, body: EnvironmentBody) -> Environment:
    row = load(session, environment_id)
    _writable(row)
    if body.name != row.name:
        raise ApiError(400, "name: cannot be changed")
    row.display_name = body.display_name or body.name
    row.description = body.description
    row.vhosts = _vhosts(body)
    session.commit()
    return row


def delete(session: Session, environment_id: str) -> None:
    row = load(session, environment_id)
    _writable(row)
    deployed = session.scalar(
        select(RevisionDeployment.id).where(RevisionDeployment.environment == row.name).limit(1)
    )
    if deployed is not None:
        raise ApiError(409, f"revisions are deployed on environment {row.name!r}; undeploy first")
    session.delete(row)
    session.commit()


def check_targets(session: Session, targets: list[tuple[str, str]]) -> None:
    """400 unless every (environment, vhost) names a known environment and one of its hosts."""
    known = by_name(session)
    for index, (name, vhost) in enumerate(targets):
        environment = known.get(name)
        if environment is None:
            raise ApiError(
                400,
                f"[{index}].name: {name!r} is not a gateway environment"
                f" (known: {', '.join(sorted(known)) or 'none'})",
            )
        hosts = [str(v.get("host")) for v in environment.vhosts]
        if vhost not in hosts:
            raise ApiError(
                400,
                f"[{index}].vhost: {vhost!r} is not a vhost of environment {name!r}"
                f" (vhosts: {', '.join(hosts)})",
            )
