"""Creating, finding, changing and deleting APIs (the working copies)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.db import as_utc
from control_plane.errors import ApiError, not_found
from control_plane.models import Api, RevisionDeployment, Subscription, utcnow
from control_plane.push import Gateway
from control_plane.schemas import ApiBody, ApiInfo, ApiOut
from control_plane.services import policies, scopes

CREATED = "CREATED"

#: ``GET /apis?query=name:foo`` searches these columns; plain text searches the name.
_SEARCHABLE = {
    "name": Api.name,
    "context": Api.context,
    "version": Api.version,
    "provider": Api.provider,
    "status": Api.lifecycle_status,
    "type": Api.type,
}


def parse_id(api_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(api_id)
    except ValueError:
        raise not_found("API", api_id) from None


def load(session: Session, api_id: str) -> Api:
    """The API with this id; 404 when there is none (or the id is not a UUID)."""
    api = session.get(Api, parse_id(api_id))
    if api is None:
        raise not_found("API", api_id)
    return api


def to_out(api: Api) -> ApiOut:
    body = ApiBody.model_validate(api.definition)
    return ApiOut(
        **body.model_dump(),
        id=str(api.id),
        life_cycle_status=api.lifecycle_status,
        created_time=as_utc(api.created_at),
        last_updated_time=as_utc(api.updated_at),
    )


def to_info(api: Api) -> ApiInfo:
    return ApiInfo(
        id=str(api.id),
        name=api.name,
        description=api.definition.get("description"),
        context=api.context,
        version=api.version,
        type=api.type,
        provider=api.provider,
        life_cycle_status=api.lifecycle_status,
        created_time=as_utc(api.created_at),
        updated_time=as_utc(api.updated_at),
    )


def _check_unique(session: Session, body: ApiBody, exclude: uuid.UUID | None = None) -> None:
    clashes = select(Api).where(
        Api.version == body.version, or_(Api.name == body.name, Api.context == body.context)
    )
    if exclude is not None:
        clashes = clashes.where(Api.id != exclude)
    for other in session.scalars(clashes):
        field = "name" if other.name == body.name else "context"
        value = body.name if field == "name" else body.context
        raise ApiError(
            409,
            f"an API with {field} {value!r} and version {body.version!r} already exists"
            f" (id {other.id})",
        )


def _commit(session: Session) -> None:
    """Commit; a unique constraint hit by a concurrent request is still a 409."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "an API with this name or context and version already exists") from None


#: The subscription tier WSO2 API Manager gives a streaming API that names none.
DEFAULT_STREAMING_TIER = "AsyncUnlimited"


def with_default_tiers(session: Session, body: ApiBody) -> ApiBody:
    """An API without ``policies`` offers :data:`DEFAULT_STREAMING_TIER` (when that tier
    exists), so it can be subscribed once published; named tiers are kept as they are."""
    if body.policies or DEFAULT_STREAMING_TIER not in policies.names(session, "subscription"):
        return body
    return body.model_copy(update={"policies": [DEFAULT_STREAMING_TIER]})


def check_tiers(session: Session, body: ApiBody) -> None:
    """400 naming the field when the API names a throttling policy that does not exist."""
    policies.check_known(session, "subscription", "policies", body.policies)
    policies.check_known(session, "api", "apiThrottlingPolicy", [body.api_throttling_policy])
    for index, operation in enumerate(body.operations):
        policies.check_known(
            session, "api", f"operations[{index}].throttlingPolicy", [operation.throttling_policy]
        )


def create(session: Session, body: ApiBody, user: str, admin: bool = False) -> Api:
    """A new API; its ``provider`` is the caller unless an admin names another user."""
    provider = (body.provider if admin else None) or user
    body = with_default_tiers(session, body.model_copy(update={"provider": provider}))
    check_tiers(session, body)
    _check_unique(session, body)
    body = scopes.settle(session, body, provider, None)
    now = utcnow()
    api = Api(
        id=uuid.uuid4(),
        name=body.name,
        context=body.context,
        version=body.version,
        type=body.type,
        provider=provider,
        lifecycle_status=CREATED,
        definition=body.document(),
        created_at=now,
        updated_at=now,
    )
    session.add(api)
    _commit(session)
    return api


def _contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match; ``%`` and ``_`` in ``text`` match themselves."""
    return func.lower(column).contains(text.lower(), autoescape=True)


def search(session: Session, query: str, limit: int, offset: int) -> tuple[list[Api], int]:
    """APIs matching ``query`` (``name:x``, ``context:x``, ... or free text), and the total."""
    statement = select(Api)
    for term in query.split():
        key, sep, value = term.partition(":")
        column = _SEARCHABLE.get(key.lower()) if sep else None
        if column is not None:
            statement = statement.where(func.lower(column).contains(value.lower(), autoescape=True))
        else:
            statement = statement.where(
                func.lower(Api.name).contains(term.lower(), autoescape=True)
            )
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    page = session.scalars(
        statement.order_by(Api.name, Api.version).limit(limit).offset(offset)
    ).all()
    return list(page), total


def replace_definition(session: Session, api: Api, document: dict[str, object]) -> Api:
    """Make ``document`` (a revision snapshot) the working copy again."""
    body = ApiBody.model_validate(document)
    body = body.model_copy(update={"provider": api.provider})
    _check_unique(session, body, exclude=api.id)
    body = scopes.settle(session, body, api.provider, api.id)
    api.context = body.context
    api.definition = body.document()
    api.updated_at = utcnow()
    _commit(session)
    return api


def update(session: Session, api_id: str, body: ApiBody, admin: bool = False) -> Api:
    """Replace the working copy; deployed revisions are snapshots and stay as they are. Only
    an admin may change the ``provider``."""
    api = load(session, api_id)
    for field in ("name", "version"):
        if getattr(body, field) != getattr(api, field):
            raise ApiError(
                400, f"{field}: cannot be changed (create a new version of the API instead)"
            )
    provider = (body.provider if admin else None) or api.provider
    body = with_default_tiers(session, body.model_copy(update={"provider": provider}))
    check_tiers(session, body)
    _check_unique(session, body, exclude=api.id)
    body = scopes.settle(session, body, provider, api.id)
    api.context = body.context
    api.type = body.type
    api.provider = provider
    api.definition = body.document()
    api.updated_at = utcnow()
    _commit(session)
    return api


def delete(session: Session, api_id: str, gateway: Gateway) -> None:
    """Delete an API with its revisions, removing it from every gateway first."""
    api = load(session, api_id)
    subscribed = session.scalar(select(func.count()).where(Subscription.api_id == api.id))
    if subscribed:
        raise ApiError(
            409,
            f"API {api.name} {api.version} has {subscribed} subscription(s);"
            " they must be removed before the API can be deleted",
        )
    deployed = session.scalar(select(func.count()).where(RevisionDeployment.api_id == api.id))
    key = str(api.id)
    session.delete(api)
    session.commit()
    if deployed:  # after the commit: the adapter follows the database
        gateway.push(key)
