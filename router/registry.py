"""Index of the live connections by who they belong to, so a rule finds its connections fast.

Pure data structure, no I/O. A connection is indexed under each non-empty value of its
:class:`Identity` (token id, application id, API id, key type). Adding and removing is O(1)
(a few dict/set operations, once per connection, nothing per frame); matching a rule walks
only the smallest index set among the rule's non-empty selectors, so it costs O(connections
of the narrowest selector), which is O(matches) for the usual one-selector rules.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

FIELDS = ("token_id", "application_id", "api_id", "key_type")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a ConnectionRule can select a connection by (from the handshake verdict)."""

    token_id: str = ""
    application_id: str = ""
    api_id: str = ""
    key_type: str = ""  # PRODUCTION / SANDBOX, upper case

    @classmethod
    def of(cls, token_id: str, application_id: str, api_id: str, key_type: str) -> Identity:
        return cls(token_id, application_id, api_id, key_type.upper())

    def values(self) -> tuple[str, str, str, str]:
        return (self.token_id, self.application_id, self.api_id, self.key_type)


class ConnectionRegistry(Generic[T]):
    """Live connections (any hashable handle) indexed by each field of their identity."""

    def __init__(self) -> None:
        self._identity: dict[T, Identity] = {}
        self._index: tuple[dict[str, set[T]], ...] = tuple({} for _ in FIELDS)

    def __len__(self) -> int:
        return len(self._identity)

    def __contains__(self, item: object) -> bool:
        return item in self._identity

    def items(self) -> list[tuple[T, Identity]]:
        """Every connection with its identity (a copy: safe to close connections while walking)."""
        return list(self._identity.items())

    def add(self, item: T, identity: Identity) -> None:
        if item in self._identity:
            self.remove(item)
        self._identity[item] = identity
        for index, value in zip(self._index, identity.values(), strict=True):
            if value:
                index.setdefault(value, set()).add(item)

    def remove(self, item: T) -> None:
        identity = self._identity.pop(item, None)
        if identity is None:
            return
        for index, value in zip(self._index, identity.values(), strict=True):
            if value:
                bucket = index.get(value)
                if bucket is not None:
                    bucket.discard(item)
                    if not bucket:
                        del index[value]

    def match(
        self, token_id: str = "", application_id: str = "", api_id: str = "", key_type: str = ""
    ) -> list[T]:
        """Every connection matching all non-empty selectors; none when every selector is empty
        (a rule that selects nothing in particular is not taken as "close everything")."""
        wanted = (token_id, application_id, api_id, key_type.upper())
        candidates: set[T] | None = None
        for index, value in zip(self._index, wanted, strict=True):
            if value:
                bucket = index.get(value)
                if not bucket:
                    return []
                if candidates is None or len(bucket) < len(candidates):
                    candidates = bucket
        if candidates is None:
            return []
        return [item for item in candidates if _matches(self._identity[item], wanted)]


def selects(
    identity: Identity, token_id: str, application_id: str, api_id: str, key_type: str
) -> bool:
    """Whether a rule with these selectors matches ``identity`` (same meaning as ``match``)."""
    wanted = (token_id, application_id, api_id, key_type.upper())
    return any(wanted) and _matches(identity, wanted)


def _matches(identity: Identity, wanted: tuple[str, str, str, str]) -> bool:
    have = identity.values()
    return all(not want or want == got for want, got in zip(wanted, have, strict=True))
