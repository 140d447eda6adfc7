"""Key managers from xDS as token issuers, merged with the built-in and file-configured ones.

:func:`issuer_from_key_manager` is pure. :class:`IssuerBook` holds the three sources (static
issuers: the test-key issuer and the issuers file; key managers from xDS; keys fetched from
JWKS URLs) and the :class:`IssuerRegistry` built from them, rebuilt and swapped in one
assignment on every change, so a handshake always sees one consistent registry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from enforcer.issuers import (
    OAUTH2,
    Issuer,
    IssuerRegistry,
    VerifyKey,
    keys_from_jwks,
    load_pem_key,
)
from wsgate_proto import subscription_pb2 as sp

log = logging.getLogger(__name__)


def issuer_from_key_manager(km: sp.KeyManager) -> Issuer:
    """The issuer a KeyManager resource describes (subscriptions are always checked).

    Raises:
        ValueError: no name or issuer, a bad algorithm, JWKS or PEM, or no key source at all.
    """
    keys: dict[str, VerifyKey] = {}
    default_key: VerifyKey | None = None
    where = f"key manager {km.name!r}"
    if km.jwks_json:
        try:
            document = json.loads(km.jwks_json)
        except ValueError as exc:
            raise ValueError(f"{where}: jwks_json is not JSON: {exc}") from exc
        if not isinstance(document, Mapping):
            raise ValueError(f"{where}: jwks_json is not a JWKS object")
        if document.get("keys"):
            keys = keys_from_jwks(document)
    if km.certificate_pem:
        try:
            default_key = load_pem_key(km.certificate_pem.encode())
        except ValueError as exc:
            raise ValueError(f"{where}: certificate_pem: {exc}") from exc
    if km.jwks_url and not km.jwks_url.startswith(("https://", "http://")):
        raise ValueError(f"{where}: jwks_url must be an http(s) URL")
    return Issuer(
        name=km.name,
        issuer=km.issuer,
        algorithms=tuple(km.algorithms),
        keys=keys,
        default_key=default_key,
        audience=(km.audience,) if km.audience else (),
        check_subscriptions=True,
        jwks_url=km.jwks_url or None,
        consumer_key_claim=km.consumer_key_claim or "azp",
        token_kind=km.token_kind or OAUTH2,
    )


def issuers_from_key_managers(kms: Iterable[sp.KeyManager]) -> list[Issuer]:
    """Every key manager as an issuer.

    Raises:
        ValueError: one of them is bad (the message names it).
    """
    return [issuer_from_key_manager(km) for km in kms]


def merge(
    static: Sequence[Issuer],
    dynamic: Sequence[Issuer],
    fetched: Mapping[str, Mapping[str, VerifyKey]],
) -> IssuerRegistry:
    """One registry: static issuers, then key managers (a key manager replaces a file-configured
    issuer with the same ``iss``, never one that skips subscription checks), each issuer's keys
    extended by those fetched from its JWKS URL (keyed by issuer name).

    Raises:
        ValueError: a key manager claims the test-key issuer, or two issuers share an ``iss``.
    """
    by_iss: dict[str, Issuer] = {i.issuer: i for i in static}
    for issuer in dynamic:
        held = by_iss.get(issuer.issuer)
        if held is not None and not held.check_subscriptions:
            raise ValueError(f"key manager {issuer.name!r} claims the built-in issuer")
        if held is not None and any(held is other for other in dynamic):
            raise ValueError(f"issuer {issuer.issuer!r} appears in two key managers")
        if held is not None:
            log.warning("key manager %r replaces the configured issuer %r", issuer.name, held.name)
        by_iss[issuer.issuer] = issuer
    merged = []
    for issuer in by_iss.values():
        extra = fetched.get(issuer.name)
        merged.append(issuer.with_keys({**issuer.keys, **extra}) if extra else issuer)
    return IssuerRegistry(merged)


class IssuerBook:
    """The issuers a handshake is checked against; :attr:`registry` is always complete."""

    def __init__(self, static: Sequence[Issuer]) -> None:
        self.static = tuple(static)
        self.dynamic: tuple[Issuer, ...] = ()
        self.fetched: dict[str, dict[str, VerifyKey]] = {}
        self.registry = merge(self.static, self.dynamic, self.fetched)
        # Called after the registry changed (routers' cached decisions must be forgotten).
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def by_name(self, name: str) -> Issuer | None:
        return next((i for i in self.registry if i.name == name), None)

    def set_key_managers(self, kms: Iterable[sp.KeyManager]) -> list[Issuer]:
        """Replace the xDS key managers; returns the new issuers.

        Raises:
            ValueError: one is bad; nothing changes (the caller NACKs).
        """
        dynamic = tuple(issuers_from_key_managers(kms))
        names = {i.name for i in dynamic} | {i.name for i in self.static}
        fetched = {name: keys for name, keys in self.fetched.items() if name in names}
        registry = merge(self.static, dynamic, fetched)
        self.dynamic, self.fetched, self.registry = dynamic, fetched, registry
        self._changed()
        return list(dynamic)

    def set_fetched_keys(self, name: str, keys: Mapping[str, VerifyKey]) -> None:
        """Keys fetched from issuer ``name``'s JWKS URL (replacing earlier fetched ones)."""
        fetched = {**self.fetched, name: dict(keys)}
        self.registry = merge(self.static, self.dynamic, fetched)
        self.fetched = fetched
        self._changed()
