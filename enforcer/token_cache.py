"""A bounded cache of verified tokens: raw token string -> :class:`Claims`.

Verifying a JWT (base64, JSON, the signature) is the largest part of a Check; a client that
reconnects with the same token need not pay it again. An entry is used only

- until the token's ``exp`` (the cached claims' ``expires_at``, compared with the caller's clock),
- while the issuer registry it was verified against is still the one in force: registries are
  immutable and replaced whenever an issuer, a key manager or a fetched key set changes, so a
  new registry empties the cache.

Only successful verifications are stored. Everything decided after authentication (revocation,
subscriptions, scopes) is still evaluated per Check by :func:`enforcer.decide.decide`.
"""

from __future__ import annotations

from collections import OrderedDict

from enforcer.issuers import IssuerRegistry
from enforcer.tokens import Claims

DEFAULT_CAPACITY = 4096


class TokenCache:
    """Least-recently-used, at most ``capacity`` tokens (0 disables the cache)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError("token cache capacity must be >= 0")
        self.capacity = capacity
        self._entries: OrderedDict[str, Claims] = OrderedDict()
        self._registry: IssuerRegistry | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, registry: IssuerRegistry, now: float) -> Claims | None:
        """The cached claims of ``token``, or None (unknown, expired, or keys changed)."""
        if registry is not self._registry:
            self._entries.clear()
            self._registry = registry
            self.misses += 1
            return None
        entries = self._entries
        claims = entries.get(token)
        if claims is None:
            self.misses += 1
            return None
        if claims.expires_at and claims.expires_at <= now:  # 0: an API key that never expires
            del entries[token]
            self.misses += 1
            return None
        entries.move_to_end(token)
        self.hits += 1
        return claims

    def put(self, token: str, registry: IssuerRegistry, claims: Claims) -> None:
        """Remember ``claims``, verified against ``registry``."""
        if not self.capacity:
            return
        if registry is not self._registry:
            self._entries.clear()
            self._registry = registry
        entries = self._entries
        entries[token] = claims
        entries.move_to_end(token)
        while len(entries) > self.capacity:
            entries.popitem(last=False)
