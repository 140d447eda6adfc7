"""Subscriptions: an application subscribes to a published API on one of its tiers;
publishers block and unblock them."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.devportal_schemas import (
    ApiSummary,
    AppSummary,
    PublisherSubscription,
    SubscriptionBody,
    SubscriptionOut,
)
from control_plane.errors import ApiError, not_found
from control_plane.models import Api, Application, Subscription, SubscriptionBlock, utcnow
from control_plane.push import Gateway
from control_plane.services import apis as api_service
from control_plane.services import applications

UNBLOCKED = "UNBLOCKED"
BLOCK_STATES = ("BLOCKED", "PROD_ONLY_BLOCKED")
#: Lifecycle states in which new subscriptions are accepted (as in WSO2).
SUBSCRIBABLE = ("PUBLISHED",)


def _app_summary(app: Application) -> AppSummary:
    return AppSummary(
        application_id=str(app.id),
        name=app.name,
        throttling_policy=app.throttling_policy,
        subscriber=app.owner,
        owner=app.owner,
        description=app.description,
    )


def to_out(sub: Subscription) -> SubscriptionOut:
    api = sub.api
    return SubscriptionOut(
        subscription_id=str(sub.id),
        application_id=str(sub.application_id),
        api_id=str(sub.api_id),
        api_info=ApiSummary(
            id=str(api.id),
            name=api.name,
            context=api.context,
            version=api.version,
            provider=api.provider,
            life_cycle_status=api.lifecycle_status,
        ),
        application_info=_app_summary(sub.application),
        throttling_policy=sub.tier,
        requested_throttling_policy=sub.tier,
        status=sub.state,  # type: ignore[arg-type]
    )


def to_publisher(sub: Subscription) -> PublisherSubscription:
    return PublisherSubscription(
        subscription_id=str(sub.id),
        api_id=str(sub.api_id),
        application_info=_app_summary(sub.application),
        throttling_policy=sub.tier,
        requested_throttling_policy=sub.tier,
        subscription_status=sub.state,  # type: ignore[arg-type]
    )


def _parse(subscription_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(subscription_id)
    except ValueError:
        raise not_found("subscription", subscription_id) from None


def load_any(session: Session, subscription_id: str) -> Subscription:
    sub = session.get(Subscription, _parse(subscription_id))
    if sub is None:
        raise not_found("subscription", subscription_id)
    return sub


def load_own(session: Session, subscription_id: str, owner: str) -> Subscription:
    sub = load_any(session, subscription_id)
    if sub.application.owner != owner:
        raise not_found("subscription", subscription_id)
    return sub


def create(session: Session, body: SubscriptionBody, owner: str, gateway: Gateway) -> Subscription:
    app = applications.load(session, body.application_id, owner)
    try:
        api = api_service.load(session, body.api_id)
    except ApiError:
        raise ApiError(400, f"apiId: API {body.api_id} does not exist") from None
    if api.lifecycle_status not in SUBSCRIBABLE:
        raise ApiError(
            400,
            f"apiId: API {api.name} {api.version} is {api.lifecycle_status};"
            " only PUBLISHED APIs can be subscribed to",
        )
    offered = list(api.definition.get("policies") or [])
    if body.throttling_policy not in offered:
        raise ApiError(
            400,
            f"throttlingPolicy: {body.throttling_policy!r} is not offered by API {api.name}"
            f" (offered: {', '.join(offered) or 'none'})",
        )
    duplicate = select(Subscription.id).where(
        Subscription.application_id == app.id, Subscription.api_id == api.id
    )
    if session.scalar(duplicate) is not None:
        raise ApiError(409, f"application {app.name} is already subscribed to API {api.name}")
    block = session.get(SubscriptionBlock, (app.id, api.id))
    sub = Subscription(
        id=uuid.uuid4(),
        application_id=app.id,
        api_id=api.id,
        tier=body.throttling_policy,
        state=block.state if block is not None else UNBLOCKED,
        created_at=utcnow(),
    )
    session.add(sub)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "the application is already subscribed to this API") from None
    gateway.subscriptions_changed()
    return sub


def list_own(
    session: Session,
    owner: str,
    application_id: str | None,
    api_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Subscription], int]:
    """The caller's subscriptions, of one application and/or to one API."""
    statement = select(Subscription).join(Application).where(Application.owner == owner)
    if application_id:
        statement = statement.where(
            Subscription.application_id == applications.load(session, application_id, owner).id
        )
    if api_id:
        statement = statement.where(Subscription.api_id == api_service.parse_id(api_id))
    return _page(session, statement, limit, offset)


def list_for_api(
    session: Session, api_id: str | None, limit: int, offset: int
) -> tuple[list[Subscription], int]:
    """Publisher view: every subscription (to one API when ``api_id`` is given)."""
    statement = select(Subscription)
    if api_id:
        statement = statement.where(Subscription.api_id == api_service.load(session, api_id).id)
    return _page(session, statement, limit, offset)


def _page(
    session: Session, statement: Select[Subscription], limit: int, offset: int
) -> tuple[list[Subscription], int]:
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = session.scalars(statement.order_by(Subscription.created_at).limit(limit).offset(offset))
    return list(rows), total


def delete_own(session: Session, subscription_id: str, owner: str, gateway: Gateway) -> None:
    sub = load_own(session, subscription_id, owner)
    session.delete(sub)
    session.commit()
    gateway.subscriptions_changed()


def set_state(session: Session, subscription_id: str, state: str, gateway: Gateway) -> Subscription:
    """Block (``BLOCKED``, ``PROD_ONLY_BLOCKED``) or unblock (``UNBLOCKED``)."""
    sub = load_any(session, subscription_id)
    sub.state = state
    block = session.get(SubscriptionBlock, (sub.application_id, sub.api_id))
    if state == UNBLOCKED:
        if block is not None:
            session.delete(block)
    elif block is None:
        session.add(
            SubscriptionBlock(
                application_id=sub.application_id,
                api_id=sub.api_id,
                state=state,
                blocked_at=utcnow(),
            )
        )
    else:
        block.state = state
    session.commit()
    gateway.subscriptions_changed()
    return sub


def check_block_state(value: str) -> str:
    state = value.strip().upper()
    if state not in BLOCK_STATES:
        raise ApiError(400, f"blockState: {value!r} is not one of {', '.join(BLOCK_STATES)}")
    return state


def count_for_api(session: Session, api: Api) -> int:
    return session.scalar(select(func.count()).where(Subscription.api_id == api.id)) or 0
