"""The router's cache of allowed handshake decisions (pure: no I/O, clocks passed in).

A client that reconnects with the same credential to the same API topic would otherwise cost an
enforcer Check (a gRPC round trip, a JWT verification, the subscription lookup) every time. Only
*allows* are kept, and only as long as nothing they depend on may have changed:

- the key is a digest of every input the enforcer's decision reads (enforcer/decide.py): API id,
  topic, every credential (kind and token) and the Authorization header, Origin, Referer, and the
  client address when an API key is offered (its IP restrictions); the raw credential is never
  stored;
- an entry lives at most ``ttl`` seconds and never past the token's expiry;
- every connection rule from the enforcer (token revoked, subscription or API blocked or removed,
  application removed) evicts the entries whose identity it selects, as it closes connections;
- a new enforcer data version (announced on the rules stream, and carried by each Check answer)
  or a new route version empties the cache, and an allow decided at another version than the one
  last announced is not stored;
- while the rules stream is down the cache is empty and bypassed: revocations could be missed.

A hit returns the enforcer's own answer, so quotas, token expiry and identity work as for a fresh
Check.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from router.registry import ConnectionRegistry, Identity
from wsgate_proto import enforcer_pb2

DEFAULT_TTL = 30.0
DEFAULT_CAPACITY = 10_000
API_KEY = "api_key"


def decision_key(
    api_id: str,
    topic: str,
    credentials: Iterable[tuple[str, str]],
    authorization: str = "",
    origin: str = "",
    referer: str = "",
    client_ip: str = "",
) -> bytes:
    """A digest of the inputs of one enforcer decision (``credentials``: (kind, token) pairs).

    The client address takes part only when an API key is offered: only API keys may carry IP
    restrictions, and leaving it out lets one token's reconnects from anywhere hit.
    """
    creds = list(credentials)
    ip = client_ip if any(kind == API_KEY for kind, _ in creds) else ""
    digest = hashlib.blake2b(digest_size=20)
    for part in (api_id, topic, authorization, origin, referer, ip):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    for kind, token in creds:
        digest.update(kind.encode("utf-8", "surrogatepass"))
        digest.update(b"\1")
        digest.update(token.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.digest()


@dataclass(slots=True)
class Entry:
    verdict: enforcer_pb2.HandshakeResponse
    identity: Identity
    expires: float  # monotonic


class DecisionCache:
    """Allowed verdicts by :func:`decision_key`, least recently used first out.

    ``ttl`` 0 or ``capacity`` 0 turns it off. :attr:`usable` says whether it may be used now
    (on, the rules stream up and an enforcer data version known).
    """

    def __init__(self, ttl: float = DEFAULT_TTL, capacity: int = DEFAULT_CAPACITY) -> None:
        if ttl < 0 or capacity < 0:
            raise ValueError("decision cache ttl and capacity must be >= 0")
        self.ttl = ttl
        self.capacity = capacity
        self.stream_up = False
        self.data_version = ""  # the enforcer's, as the rules stream last announced it
        self.route_version = ""
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._index: ConnectionRegistry[bytes] = ConnectionRegistry()
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.evicted: dict[str, int] = {"rule": 0, "expired": 0, "capacity": 0, "flush": 0}
        # Told of every entry forgotten (its key), or of all of them (None), before the call
        # that forgets returns: what was derived from an entry must not outlive it (the core's
        # handshake plans, router/server.py CoreHandshakes).
        self.on_forget: Callable[[bytes | None], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.capacity > 0

    @property
    def usable(self) -> bool:
        return self.enabled and self.stream_up and bool(self.data_version)

    # -- lookups -------------------------------------------------------------------------------

    def get(self, key: bytes, now: float) -> enforcer_pb2.HandshakeResponse | None:
        """The cached allow for ``key`` (``now``: monotonic), or None; counts hits and misses
        (not while the cache is unusable: then every handshake goes to the enforcer anyway)."""
        if not self.usable:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= now:
            self._drop(key)
            self.evicted["expired"] += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.verdict

    def peek(self, key: bytes, now: float) -> enforcer_pb2.HandshakeResponse | None:
        """The cached, unexpired allow for ``key`` or None, counting nothing (the router's core
        handshakes look first, and count with :meth:`get` only when they use it)."""
        if not self.usable:
            return None
        entry = self._entries.get(key)
        return entry.verdict if entry is not None and entry.expires > now else None

    def entry(self, key: bytes, now: float) -> Entry | None:
        """The unexpired entry for ``key`` (None: none, or the cache is not usable); counts
        nothing."""
        if not self.usable:
            return None
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > now else None

    def put(
        self,
        key: bytes,
        verdict: enforcer_pb2.HandshakeResponse,
        api_id: str,
        now: float,
        wall: float,
    ) -> bool:
        """Remember an allow (``now`` monotonic, ``wall`` epoch seconds); returns whether it
        was stored. Denials, answers decided at another data version than the announced one,
        and tokens about to expire are not."""
        if not self.usable or not verdict.allowed or verdict.data_version != self.data_version:
            return False
        lifetime = self.ttl
        if verdict.token_expires_at > 0:
            lifetime = min(lifetime, verdict.token_expires_at - wall)
        if lifetime <= 0:
            return False
        identity = Identity.of(verdict.token_id, verdict.application_id, api_id, verdict.key_type)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = Entry(verdict, identity, now + lifetime)
        self._index.add(key, identity)
        self.stored += 1
        while len(self._entries) > self.capacity:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evicted["capacity"] += 1
        return True

    # -- what empties it -----------------------------------------------------------------------

    def apply_rule(self, rule: enforcer_pb2.ConnectionRule) -> int:
        """Evict the entries a connection rule selects (as it closes their connections)."""
        keys = self._index.match(rule.token_id, rule.application_id, rule.api_id, rule.key_type)
        for key in keys:
            self._drop(key)
        self.evicted["rule"] += len(keys)
        return len(keys)

    def set_data_version(self, version: str) -> int:
        """The enforcer announced its data version; a change empties the cache."""
        if version == self.data_version:
            return 0
        self.data_version = version
        return self.clear()

    def set_route_version(self, version: str) -> int:
        """The router applied routes at ``version``; a change empties the cache."""
        if version == self.route_version:
            return 0
        self.route_version = version
        return self.clear()

    def stream_opened(self) -> None:
        """The rules stream is up; the cache is usable once the data version is announced."""
        self.stream_up = True

    def stream_lost(self) -> int:
        """The rules stream is down: rules could be missed, so empty the cache and bypass it
        until the stream is back and announces the data version again."""
        self.stream_up = False
        self.data_version = ""
        return self.clear()

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._index = ConnectionRegistry()
        self.evicted["flush"] += count
        if self.on_forget is not None:
            self.on_forget(None)
        return count

    def _drop(self, key: bytes) -> None:
        self._entries.pop(key, None)
        self._index.remove(key)
        if self.on_forget is not None:
            self.on_forget(key)
