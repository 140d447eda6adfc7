"""Developer-portal applications: owned by the user who creates them."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.devportal_schemas import ApplicationBody, ApplicationInfo, ApplicationOut
from control_plane.errors import ApiError, not_found
from control_plane.models import Application, utcnow
from control_plane.push import Gateway
from control_plane.services import api_keys, keys, policies

log = logging.getLogger(__name__)


def parse_id(application_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(application_id)
    except ValueError:
        raise not_found("application", application_id) from None


def load(session: Session, application_id: str, owner: str) -> Application:
    """The caller's application; 404 for anyone else's (its existence is not revealed)."""
    app = session.get(Application, parse_id(application_id))
    if app is None or app.owner != owner:
        raise not_found("application", application_id)
    return app


def to_info(app: Application) -> ApplicationInfo:
    return ApplicationInfo(
        application_id=str(app.id),
        name=app.name,
        throttling_policy=app.throttling_policy,
        description=app.description,
        subscription_count=len(app.subscriptions),
        attributes=dict(app.attributes or {}),
        owner=app.owner,
    )


def to_out(app: Application) -> ApplicationOut:
    return ApplicationOut(
        **to_info(app).model_dump(),
        keys=[keys.to_out(row) for row in app.keys],
    )


def _check(session: Session, body: ApplicationBody, owner: str, exclude: uuid.UUID | None) -> None:
    policies.check_known(session, "application", "throttlingPolicy", [body.throttling_policy])
    clash = select(Application.id).where(Application.owner == owner, Application.name == body.name)
    if exclude is not None:
        clash = clash.where(Application.id != exclude)
    if session.scalar(clash) is not None:
        raise ApiError(409, f"you already have an application named {body.name!r}")


def _commit(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"you already have an application named {name!r}") from None


def create(
    session: Session, body: ApplicationBody, owner: str, gateway: Gateway, limit: int = 100
) -> Application:
    """A new application of ``owner``, who may own at most ``limit`` of them."""
    owned = session.scalar(select(func.count()).where(Application.owner == owner)) or 0
    if owned >= limit:
        raise ApiError(
            400,
            f"you already own {owned} applications, the limit"
            f" (WSGATE_CP_MAX_APPLICATIONS_PER_USER={limit}); delete one first",
        )
    _check(session, body, owner, None)
    app = Application(
        id=uuid.uuid4(),
        name=body.name,
        owner=owner,
        throttling_policy=body.throttling_policy,
        description=body.description,
        attributes=dict(body.attributes),
        created_at=utcnow(),
    )
    session.add(app)
    _commit(session, body.name)
    gateway.subscriptions_changed()
    return app


def search(
    session: Session, owner: str, query: str, limit: int, offset: int
) -> tuple[list[Application], int]:
    statement = select(Application).where(Application.owner == owner)
    if query:
        statement = statement.where(
            func.lower(Application.name).contains(query.lower(), autoescape=True)
        )
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = session.scalars(statement.order_by(Application.name).limit(limit).offset(offset))
    return list(rows), total


def update(
    session: Session, application_id: str, body: ApplicationBody, owner: str, gateway: Gateway
) -> Application:
    app = load(session, application_id, owner)
    _check(session, body, owner, app.id)
    app.name = body.name
    app.throttling_policy = body.throttling_policy
    app.description = body.description
    app.attributes = dict(body.attributes)
    _commit(session, body.name)
    gateway.subscriptions_changed()
    return app


def delete(session: Session, application_id: str, owner: str, gateway: Gateway) -> None:
    """Delete an application with its subscriptions and keys; its API keys are revoked."""
    app = load(session, application_id, owner)
    api_keys.revoke_all(session, app)
    session.delete(app)
    session.commit()
    gateway.subscriptions_changed()


#: The application every developer-portal user starts with, as in WSO2.
DEFAULT_APPLICATION = "DefaultApplication"


def ensure_default(session: Session, owner: str, gateway: Gateway) -> Application | None:
    """Give ``owner`` a ``DefaultApplication`` (application tier ``Unlimited``) unless they have
    one; idempotent, also when two requests race. The new one, or None.

    Keyed by name, not by "first visit" (no per-user record is kept): an owner who already has
    other applications (e.g. ``wsgate up``'s sample one) still gets it, and one who deleted it
    gets it again the next time the caller asks (the portal asks once per sign-in)."""
    clash = select(Application.id).where(
        Application.owner == owner, Application.name == DEFAULT_APPLICATION
    )
    if session.scalar(clash) is not None:
        return None
    body = ApplicationBody(
        name=DEFAULT_APPLICATION,
        throttling_policy="Unlimited",
        description="Created for you on your first sign-in to the Developer Portal.",
    )
    try:
        return create(session, body, owner, gateway)
    except ApiError as exc:
        if exc.status == 409:  # a concurrent request created it first
            return None
        if exc.status == 400:  # e.g. an administrator removed the Unlimited application tier
            log.warning("no %s for %s: %s", DEFAULT_APPLICATION, owner, exc.description)
            return None
        raise
