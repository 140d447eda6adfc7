"""Fetching a key manager's JWKS when a token names a ``kid`` the enforcer does not hold.

At most one fetch per issuer is in flight, and a new one starts at most once per
``min_interval`` seconds per issuer (a flood of tokens with made-up ``kid`` values cannot turn
the enforcer into a JWKS hammer). A handshake waits for the fetch at most ``wait`` seconds; a
fetch that finishes later still installs its keys for the next handshakes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from enforcer.issuers import keys_from_jwks
from enforcer.keymanagers import IssuerBook

log = logging.getLogger(__name__)

MIN_INTERVAL = 10.0
FETCH_TIMEOUT = 5.0
WAIT = 1.0
MAX_BYTES = 1024 * 1024


def trust(ca_files: Iterable[Path]) -> ssl.SSLContext:
    """The system trust store plus every CA file that exists (e.g. the local wsgate CA)."""
    context = ssl.create_default_context()
    for path in ca_files:
        if path.is_file():
            context.load_verify_locations(cafile=str(path))
    return context


class JwksRefresher:
    def __init__(
        self,
        book: IssuerBook,
        *,
        verify: ssl.SSLContext | bool = True,
        min_interval: float = MIN_INTERVAL,
        fetch_timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book
        self.verify = verify
        self.min_interval = min_interval
        self.fetch_timeout = fetch_timeout
        self.clock = clock
        self.fetches = 0
        self._last: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task[bool]] = {}

    def start(self, name: str) -> asyncio.Task[bool] | None:
        """Start fetching issuer ``name``'s JWKS unless one is in flight (returned) or the last
        one started less than ``min_interval`` ago (None). Needs a running loop."""
        task = self._in_flight.get(name)
        if task is not None:
            return task
        issuer = self.book.by_name(name)
        if issuer is None or not issuer.jwks_url:
            return None
        last = self._last.get(name)
        now = self.clock()
        if last is not None and now - last < self.min_interval:
            return None
        self._last[name] = now
        task = asyncio.get_running_loop().create_task(self._fetch(name, issuer.jwks_url))
        self._in_flight[name] = task
        task.add_done_callback(lambda _: self._in_flight.pop(name, None))
        return task

    async def refresh(self, name: str, wait: float = WAIT) -> bool:
        """Fetch (or join the fetch of) issuer ``name``'s keys, waiting at most ``wait`` seconds;
        True when new keys are in place."""
        task = self.start(name)
        if task is None:
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            log.info("JWKS of %s not fetched within %.1f s; the fetch goes on", name, wait)
            return False

    async def _fetch(self, name: str, url: str) -> bool:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(verify=self.verify, timeout=self.fetch_timeout) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > MAX_BYTES:
                raise ValueError("JWKS document too large")
            document = response.json()
            if not isinstance(document, dict):
                raise ValueError("JWKS is not a JSON object")
            keys = keys_from_jwks(document)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch the JWKS of %s from %s: %s", name, url, exc)
            return False
        if self.book.by_name(name) is None:  # the key manager went away meanwhile
            return False
        self.book.set_fetched_keys(name, keys)
        log.info("fetched %d key(s) for %s from %s", len(keys), name, url)
        return True
