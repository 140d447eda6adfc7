"""Slowing down password guessing: a per-key backoff after repeated failures.

Keys are a user name and a client address (``user:alice``, ``addr:10.0.0.7``); a sign-in is
refused while any of its keys is held back. Each failure adds one to a key's score, which
melts by one every ``decay`` seconds of quiet; past ``free_failures`` the key is held back for
``base_delay * 2**(score - free_failures - 1)`` seconds, at most ``max_delay``. So a guesser is
slowed to about one try per ``max_delay``, and the real user is never locked out for longer
than that. Pure: the clock is passed in; memory is bounded by ``max_keys`` (least recently
used keys are forgotten first).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    free_failures: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: Seconds of quiet that forgive one failure.
    decay: float = 60.0
    max_keys: int = 10_000


DEFAULT_POLICY = BackoffPolicy()


@dataclass
class _Entry:
    score: float
    updated: float
    blocked_until: float = 0.0


class Backoff:
    """Failure scores and hold-back times per key."""

    def __init__(
        self, policy: BackoffPolicy = DEFAULT_POLICY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # FastAPI runs sync dependencies in worker threads

    def _current(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.policy.decay > 0:
            entry.score = max(0.0, entry.score - (now - entry.updated) / self.policy.decay)
        entry.updated = now
        if entry.score == 0 and entry.blocked_until <= now:
            del self._entries[key]
            return None
        return entry

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until every one of ``keys`` may try again (0: go ahead)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                entry = self._current(key, now)
                if entry is not None:
                    wait = max(wait, entry.blocked_until - now)
        return wait

    def failed(self, keys: Iterable[str]) -> float:
        """Count a failure against each key; returns the longest hold-back it caused (0: the
        keys still have free failures)."""
        now = self.clock()
        policy = self.policy
        longest = 0.0
        with self._lock:
            for key in keys:
                entry = self._current(key, now)
                if entry is None:
                    entry = self._entries[key] = _Entry(0.0, now)
                self._entries.move_to_end(key)
                entry.score += 1
                excess = math.ceil(entry.score) - policy.free_failures
                if excess > 0:
                    delay = min(policy.max_delay, policy.base_delay * 2 ** min(excess - 1, 62))
                    entry.blocked_until = max(entry.blocked_until, now + delay)
                    longest = max(longest, entry.blocked_until - now)
            while len(self._entries) > policy.max_keys:
                self._entries.popitem(last=False)
        return longest

    def succeeded(self, keys: Iterable[str]) -> None:
        """A correct password: forget these keys (call it with the user key; an address shared
        with a guesser stays held back until it decays)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def keys_for(user: str, address: str) -> list[str]:
    """The backoff keys of one sign-in attempt."""
    keys = [f"user:{user[:256]}"]
    if address:
        keys.append(f"addr:{address}")
    return keys


def retry_header(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))


TOO_MANY_MESSAGE = "Too Many Requests"


def log_failure(logger: logging.Logger, user: str, address: str, held_back: float) -> None:
    """Log a failed sign-in that started (or extended) a hold-back; never the password."""
    if held_back > 0:
        logger.warning(
            "sign-in backoff: failed password for user %r from %s; held back %s s",
            user[:64],
            address or "-",
            retry_header(held_back),
        )


def too_many_description(seconds: float) -> str:
    return (
        "too many failed sign-ins for this user or from this address;"
        f" retry after {retry_header(seconds)} s"
    )
