"""The WSO2 API lifecycle: states, the actions that move between them, and their effect on
what gateways run."""

from __future__ import annotations

from sqlalchemy.orm import Session

from control_plane.errors import ApiError
from control_plane.models import Api, utcnow
from control_plane.push import Gateway
from control_plane.schemas import LifecycleState, Transition
from control_plane.services import apis as api_service
from control_plane.services import deployments

#: state -> {action: next state}, as in WSO2 API-M's default APILifeCycle.
TRANSITIONS: dict[str, dict[str, str]] = {
    "CREATED": {"Publish": "PUBLISHED", "Deploy as a Prototype": "PROTOTYPED"},
    "PROTOTYPED": {
        "Publish": "PUBLISHED",
        "Demote to Created": "CREATED",
        "Deploy as a Prototype": "PROTOTYPED",
    },
    "PUBLISHED": {
        "Block": "BLOCKED",
        "Deprecate": "DEPRECATED",
        "Demote to Created": "CREATED",
        "Deploy as a Prototype": "PROTOTYPED",
        "Publish": "PUBLISHED",
    },
    "BLOCKED": {"Deprecate": "DEPRECATED", "Re-Publish": "PUBLISHED"},
    "DEPRECATED": {"Retire": "RETIRED"},
    "RETIRED": {},
}
ACTIONS = sorted({action for moves in TRANSITIONS.values() for action in moves})


def next_state(current: str, action: str) -> str:
    """The state ``action`` leads to from ``current``.

    Raises:
        ApiError: 400 for an action WSO2 does not have, 409 for one not allowed from here.
    """
    canonical = {name.lower(): name for name in ACTIONS}.get(action.strip().lower())
    if canonical is None:
        raise ApiError(400, f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    moves = TRANSITIONS.get(current, {})
    if canonical not in moves:
        allowed = ", ".join(moves) or "none"
        raise ApiError(
            409, f"cannot {canonical} an API in state {current}; allowed actions: {allowed}"
        )
    return moves[canonical]


def state_of(api: Api) -> LifecycleState:
    return LifecycleState(
        state=api.lifecycle_status,
        available_transitions=[
            Transition(event=event, target_state=target)
            for event, target in TRANSITIONS.get(api.lifecycle_status, {}).items()
        ],
    )


def change(session: Session, api_id: str, action: str, gateway: Gateway) -> Api:
    """Apply a lifecycle action; deployed revisions learn the new state (a retired API leaves
    every gateway, as in WSO2). The adapter checks the new state before it is saved and gets
    it after the commit.
    """
    api = api_service.load(session, api_id)
    target = next_state(api.lifecycle_status, action)
    if target == "PUBLISHED" and not api.definition.get("policies"):
        raise ApiError(
            400,
            f"policies: API {api.name} {api.version} offers no subscription tier, so no"
            " application could subscribe to it; set its policies (e.g. AsyncGold) first",
        )
    plan = deployments.plan_of(session, api.id)
    if plan and target != "RETIRED":
        deployments.validate(session, gateway, api, plan, lifecycle_status=target)
        api = api_service.load(session, api_id)  # afresh: the dry run ended the transaction
        target = next_state(api.lifecycle_status, action)
    key, deployed = api.id, bool(plan)
    api.lifecycle_status = target
    api.updated_at = utcnow()
    if target == "RETIRED":
        deployed = deployments.remove_all(session, api)
    deployments.commit(session, f"lifecycle change of API {api_id}")
    if deployed:
        gateway.push(str(key))
    return api
