"""Throttling policies (tiers): CRUD, and the checks other resources make against them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.admin_schemas import (
    DefaultLimit,
    EventCount,
    PolicyBody,
    PolicyKind,
    PolicyOut,
    RequestCount,
    TimeUnit,
)
from control_plane.errors import ApiError, not_found
from control_plane.models import Api, Application, Subscription, ThrottlingPolicy

#: WSO2's ``type`` of each kind of policy.
TYPE_NAMES = {
    "subscription": "SubscriptionThrottlePolicy",
    "application": "ApplicationThrottlePolicy",
    "api": "AdvancedThrottlePolicy",
}
KIND_WORDS = {"subscription": "subscription", "application": "application", "api": "API-level"}


def to_out(row: ThrottlingPolicy) -> PolicyOut:
    if row.limit_type == "EVENTCOUNTLIMIT":
        limit = DefaultLimit(
            type="EVENTCOUNTLIMIT",
            event_count=EventCount(
                event_count=row.count,
                unit_time=row.unit_time,
                time_unit=cast(TimeUnit, row.time_unit),
            ),
        )
    else:
        limit = DefaultLimit(
            type="REQUESTCOUNTLIMIT",
            request_count=RequestCount(
                request_count=row.count,
                unit_time=row.unit_time,
                time_unit=cast(TimeUnit, row.time_unit),
            ),
        )
    return PolicyOut(
        policy_id=str(row.id),
        policy_name=row.name,
        display_name=row.display_name or row.name,
        description=row.description,
        default_limit=limit,
        stop_on_quota_reach=row.stop_on_quota_reach,
        type=TYPE_NAMES[row.kind],
    )


def list_policies(session: Session, kind: PolicyKind) -> list[ThrottlingPolicy]:
    statement = select(ThrottlingPolicy).where(ThrottlingPolicy.kind == kind)
    return list(session.scalars(statement.order_by(ThrottlingPolicy.name)))


def names(session: Session, kind: PolicyKind) -> set[str]:
    statement = select(ThrottlingPolicy.name).where(ThrottlingPolicy.kind == kind)
    return set(session.scalars(statement))


def load(session: Session, kind: PolicyKind, policy_id: str) -> ThrottlingPolicy:
    try:
        key = uuid.UUID(policy_id)
    except ValueError:
        raise not_found(f"{KIND_WORDS[kind]} policy", policy_id) from None
    row = session.get(ThrottlingPolicy, key)
    if row is None or row.kind != kind:
        raise not_found(f"{KIND_WORDS[kind]} policy", policy_id)
    return row


def _apply(row: ThrottlingPolicy, body: PolicyBody) -> None:
    count, unit_time, time_unit = body.default_limit.count()
    row.display_name = body.display_name or body.policy_name
    row.description = body.description
    row.limit_type = body.default_limit.type
    row.count = count
    row.unit_time = unit_time
    row.time_unit = time_unit
    row.stop_on_quota_reach = body.stop_on_quota_reach


def create(session: Session, kind: PolicyKind, body: PolicyBody) -> ThrottlingPolicy:
    if body.policy_name in names(session, kind):
        raise ApiError(
            409, f"a {KIND_WORDS[kind]} policy named {body.policy_name!r} already exists"
        )
    row = ThrottlingPolicy(id=uuid.uuid4(), kind=kind, name=body.policy_name)
    _apply(row, body)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"a policy named {body.policy_name!r} already exists") from None
    return row


def update(
    session: Session, kind: PolicyKind, policy_id: str, body: PolicyBody
) -> ThrottlingPolicy:
    row = load(session, kind, policy_id)
    if body.policy_name != row.name:
        raise ApiError(400, "policyName: cannot be changed")
    _apply(row, body)
    session.commit()
    return row


def _users(session: Session, row: ThrottlingPolicy) -> list[str]:
    """What still refers to the policy, described for a 409."""
    found: list[str] = []
    if row.kind == "subscription":
        subs = session.scalar(select(Subscription.id).where(Subscription.tier == row.name).limit(1))
        if subs is not None:
            found.append("subscriptions")
        for api in session.scalars(select(Api)):
            if row.name in api.definition.get("policies", []):
                found.append(f"API {api.name} {api.version}")
    elif row.kind == "application":
        apps = session.scalar(
            select(Application.id).where(Application.throttling_policy == row.name).limit(1)
        )
        if apps is not None:
            found.append("applications")
    else:
        for api in session.scalars(select(Api)):
            if row.name in api_level_policies(api.definition):
                found.append(f"API {api.name} {api.version}")
    return found


def delete(session: Session, kind: PolicyKind, policy_id: str) -> None:
    row = load(session, kind, policy_id)
    users = _users(session, row)
    if users:
        raise ApiError(
            409, f"policy {row.name!r} is in use by {', '.join(users[:5])}; it cannot be deleted"
        )
    session.delete(row)
    session.commit()


def api_level_policies(definition: dict[str, object]) -> set[str]:
    """The API-level (advanced) policies an API definition names, API-wide and per topic."""
    found = set()
    policy = definition.get("apiThrottlingPolicy")
    if isinstance(policy, str) and policy:
        found.add(policy)
    operations = definition.get("operations")
    for op in operations if isinstance(operations, list) else []:
        if isinstance(op, dict) and isinstance(op.get("throttlingPolicy"), str):
            found.add(op["throttlingPolicy"])
    return found


def check_known(
    session: Session, kind: PolicyKind, field: str, wanted: Iterable[str | None]
) -> None:
    """400 naming ``field`` when a policy in ``wanted`` is not a known ``kind`` policy."""
    known = names(session, kind)
    for name in wanted:
        if name and name not in known:
            raise ApiError(
                400,
                f"{field}: {name!r} is not a known {KIND_WORDS[kind]} throttling policy"
                f" (known: {', '.join(sorted(known)) or 'none'})",
            )
