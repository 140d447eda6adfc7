"""Publisher view of subscriptions: list them, block and unblock (WSO2 publisher v4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.auth import Publisher
from control_plane.dependencies import AdapterGateway, DbSession
from control_plane.devportal_schemas import PublisherSubscription, PublisherSubscriptionList
from control_plane.schemas import MAX_OFFSET, Pagination
from control_plane.services import subscriptions as service

router = APIRouter(prefix="/subscriptions", tags=["Subscriptions (publisher)"])

SubscriptionQuery = Annotated[str, Query(alias="subscriptionId")]


@router.get("", response_model=PublisherSubscriptionList)
def list_subscriptions(
    session: DbSession,
    _: Publisher,
    api_id: Annotated[str | None, Query(alias="apiId")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> PublisherSubscriptionList:
    rows, total = service.list_for_api(session, api_id, limit, offset)
    return PublisherSubscriptionList(
        count=len(rows),
        list=[service.to_publisher(sub) for sub in rows],
        pagination=Pagination(offset=offset, limit=limit, total=total),
    )


@router.post("/block-subscription", response_model=PublisherSubscription)
def block_subscription(
    session: DbSession,
    gateway: AdapterGateway,
    _: Publisher,
    subscription_id: SubscriptionQuery,
    block_state: Annotated[str, Query(alias="blockState")],
) -> PublisherSubscription:
    """BLOCKED stops every key; PROD_ONLY_BLOCKED stops production keys only. Live
    connections of the subscription are closed by the gateway."""
    state = service.check_block_state(block_state)
    return service.to_publisher(service.set_state(session, subscription_id, state, gateway))


@router.post("/unblock-subscription", response_model=PublisherSubscription)
def unblock_subscription(
    session: DbSession, gateway: AdapterGateway, _: Publisher, subscription_id: SubscriptionQuery
) -> PublisherSubscription:
    return service.to_publisher(
        service.set_state(session, subscription_id, service.UNBLOCKED, gateway)
    )
