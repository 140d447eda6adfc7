"""Where subscription checks will plug in: the decision asks a :class:`SubscriptionChecker`.

Subscriptions (application -> API, with a tier) arrive in a later issue. Until then
:data:`NO_SUBSCRIPTION_CHECKS` is used: it lets every valid token through, as if each
application were subscribed to every API on the ``Unlimited`` tier. It is consulted only for
issuers with ``check_subscriptions`` (never for test keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from enforcer.tokens import Claims
from wsgate_proto import config_pb2


@dataclass(frozen=True)
class Subscription:
    """The subscription a handshake is made under."""

    tier: str
    application_id: str = ""
    application_name: str = ""
    application_tier: str = ""


class SubscriptionChecker(Protocol):
    def check(self, claims: Claims, api: config_pb2.ApiPolicy, key_type: str) -> Subscription:
        """The subscription that allows ``claims`` to use ``api``.

        Raises:
            enforcer.denials.Denial: not subscribed (403 900908) or the subscription is blocked.
        """
        ...


class NoSubscriptionChecks:
    """Allows everything: the stand-in until a subscription store exists."""

    def check(self, claims: Claims, api: config_pb2.ApiPolicy, key_type: str) -> Subscription:
        return Subscription(tier="Unlimited")


NO_SUBSCRIPTION_CHECKS: SubscriptionChecker = NoSubscriptionChecks()
