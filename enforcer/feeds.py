"""The enforcer's xDS handlers: ApiPolicy and the six subscription-data types in one place.

Every handler applies its update (or raises, which NACKs it and keeps the last good state), then
lets the :class:`~enforcer.watch.ConnectionWatch` derive the connection rules from the new
state. KeyManager updates also rebuild the trusted issuers, and start fetching the JWKS of key
managers that give only a ``jwks_url``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf import any_pb2

from enforcer.jwks import JwksRefresher
from enforcer.keymanagers import IssuerBook
from enforcer.policies import PolicyStore
from enforcer.rules import epoch
from enforcer.subscriptions import BUILDERS, SubscriptionStore, unpack
from enforcer.watch import ConnectionWatch
from wsgate_common.resources import (
    API_POLICY_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    SUBSCRIPTION_DATA_TYPE_URLS,
    SUBSCRIPTION_TYPE_URL,
)
from wsgate_proto import subscription_pb2 as sp

log = logging.getLogger(__name__)

Handler = Callable[[str, list[any_pb2.Any]], None]


class Feeds:
    def __init__(
        self,
        policies: PolicyStore,
        subscriptions: SubscriptionStore,
        book: IssuerBook,
        watch: ConnectionWatch,
        refresher: JwksRefresher | None = None,
    ) -> None:
        self.policies = policies
        self.subscriptions = subscriptions
        self.book = book
        self.watch = watch
        self.refresher = refresher
        self.updates = 0  # applied updates, for tests and logs

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {API_POLICY_TYPE_URL: self.on_policies}
        for type_url in SUBSCRIPTION_DATA_TYPE_URLS:
            handlers[type_url] = self._subscription_handler(type_url)
        return handlers

    def on_policies(self, version: str, resources: list[any_pb2.Any]) -> None:
        before = self.policies.current.version
        self.policies.apply(version, resources)
        self._derive(compare_apis=_same_source(before, version))

    def _subscription_handler(self, type_url: str) -> Handler:
        def handle(version: str, resources: list[any_pb2.Any]) -> None:
            before = self.subscriptions.current
            if type_url == KEY_MANAGER_TYPE_URL:
                self._apply_key_managers(version, resources)
            else:
                self.subscriptions.apply(type_url, version, resources)
            self._derive(
                compare_subscriptions=type_url != SUBSCRIPTION_TYPE_URL
                or _same_source(before.versions.get(type_url, ""), version)
            )

        return handle

    def _apply_key_managers(self, version: str, resources: list[any_pb2.Any]) -> None:
        # Check both views before changing either: the store's (names) and the issuers'.
        BUILDERS[KEY_MANAGER_TYPE_URL](self.subscriptions.current, version, resources)
        issuers = self.book.set_key_managers(unpack(KEY_MANAGER_TYPE_URL, sp.KeyManager, resources))
        self.subscriptions.apply(KEY_MANAGER_TYPE_URL, version, resources)
        log.info(
            "trusting %d token issuer(s): %s",
            len(self.book.registry),
            ", ".join(i.name for i in self.book.registry),
        )
        if self.refresher is not None:
            for issuer in issuers:
                if issuer.jwks_url and not issuer.keys and issuer.default_key is None:
                    self.refresher.start(issuer.name)

    def _derive(self, *, compare_apis: bool = True, compare_subscriptions: bool = True) -> None:
        self.updates += 1
        self.watch.update(
            self.policies.current,
            self.subscriptions.current,
            compare_apis=compare_apis,
            compare_subscriptions=compare_subscriptions,
        )


def _same_source(before: str, after: str) -> bool:
    """False when the versions come from different adapter boots (its set may be partial)."""
    return not before or epoch(before) == epoch(after)
