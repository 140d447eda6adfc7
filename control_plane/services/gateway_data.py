"""Reading the subscription data from the database for ``push.AdapterSync``."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane import subscription_data
from control_plane.models import (
    Application,
    KeyMapping,
    RevokedToken,
    Subscription,
    ThrottlingPolicy,
)
from control_plane.services.oauth import TokenIssuer
from wsgate_proto import subscription_pb2


def read(session: Session, issuer: TokenIssuer) -> subscription_pb2.SubscriptionData:
    now = time.time()
    managers = [subscription_data.resident_key_manager(issuer.issuer, issuer.key.jwks())]
    if issuer.api_key_issuer:
        managers.append(subscription_data.api_key_issuer(issuer.api_key_issuer, issuer.key.jwks()))
    return subscription_data.build(
        applications=session.scalars(select(Application)).all(),
        subscriptions=session.scalars(select(Subscription)).all(),
        key_mappings=session.scalars(select(KeyMapping)).all(),
        policies=session.scalars(select(ThrottlingPolicy)).all(),
        key_managers=managers,
        revoked=session.scalars(select(RevokedToken).where(RevokedToken.expires_at > now)).all(),
        now=now,
    )


def loader(
    factory: sessionmaker[Session], issuer: TokenIssuer
) -> Callable[[], subscription_pb2.SubscriptionData]:
    def load() -> subscription_pb2.SubscriptionData:
        with factory() as session:
            return read(session, issuer)

    return load
