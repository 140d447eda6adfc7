"""Opening the backend WebSocket: TCP (or TLS), our own upgrade request, a verified 101."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import math
import socket
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

from router.http11 import HeadReader, HttpError, Response, check_backend_response
from router.http11 import parse_response_head as parse_head
from wsgate_common.request_ids import RANDOM


class BackendError(Exception):
    """The backend could not be reached or refused the upgrade; ``status`` is 502 or 504."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass(frozen=True, slots=True)
class BackendUrl:
    secure: bool
    host: str
    port: int
    target: str  # path + query sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


@lru_cache(maxsize=1024)
def parse_backend_url(url: str, client_query: str = "") -> BackendUrl:
    """Split ``ws[s]://host[:port]/path?q``; the client's query string is appended (cached:
    the same few backend URLs come with every handshake).

    Raises:
        ValueError: not a ws/wss URL or no host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError(f"backend URL {url!r} is not ws:// or wss://")
    secure = scheme in ("wss", "https")
    port = parts.port or (443 if secure else 80)
    target = parts.path or "/"
    query = "&".join(q for q in (parts.query, client_query) if q)
    if query:
        target += "?" + query
    return BackendUrl(secure, parts.hostname, port, target)


@lru_cache(maxsize=64)
def ssl_context(ca_pem: str) -> ssl.SSLContext:
    """A client context trusting ``ca_pem`` (or the system store when empty); cached."""
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem)
    return ssl.create_default_context()


RESOLVE_TTL = 10.0  # seconds a backend host name's addresses are reused
MAX_RESOLVED = 256


@lru_cache(maxsize=256)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Resolver:
    """Backend host names to addresses, kept :data:`RESOLVE_TTL` seconds.

    Without it every handshake resolves the backend's name again (``localhost`` in the sample
    APIs): a trip through the event loop's resolver threads that cost more than the connect."""

    def __init__(self, ttl: float = RESOLVE_TTL) -> None:
        self.ttl = ttl
        self._known: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to try in order (``host`` itself when it is one).

        Raises:
            OSError: the name does not resolve.
        """
        if is_ip(host):
            return [host]
        now = time.monotonic()
        known = self._known.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not found:
            raise OSError(f"{host} has no address")
        if len(self._known) >= MAX_RESOLVED:
            self._known.clear()
        self._known[(host, port)] = (now + self.ttl, found)
        return found

    def fresh_until(self, host: str, port: int) -> float:
        """Until when (monotonic) :meth:`cached` answers for ``host`` as now (0: it does
        not; inf: an address needs no resolving)."""
        if is_ip(host):
            return math.inf
        known = self._known.get((host, port))
        return known[0] if known is not None else 0.0

    def cached(self, host: str, port: int) -> list[str] | None:
        """The addresses without waiting: ``host`` itself when it is one, the known ones while
        fresh, else None (the core's handshakes connect only to an address known already)."""
        if is_ip(host):
            return [host]
        known = self._known.get((host, port))
        if known is not None and known[0] > time.monotonic():
            return known[1]
        return None

    def forget(self, host: str, port: int) -> None:
        self._known.pop((host, port), None)


RESOLVER = Resolver()


def new_key() -> str:
    """A Sec-WebSocket-Key for the backend upgrade."""
    return base64.b64encode(RANDOM.take(16)).decode("ascii")


def build_request(url: BackendUrl, key: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [
        f"GET {url.target} HTTP/1.1",
        f"Host: {url.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers if value]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class BackendHandshake(asyncio.Protocol):
    """Reads the backend's response head; reading pauses after it until the relay takes over."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[Response, bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        self.lost = False
        self._reader = HeadReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return  # reading is paused; nothing should arrive
        try:
            got = self._reader.feed(data)
            if got is None:
                return
            head, rest = got
            response = parse_head(head)
        except (HttpError, ValueError) as exc:
            self.done.set_exception(BackendError(502, f"invalid backend response: {exc}"))
            return
        if self.transport is not None:
            self.transport.pause_reading()
        self.done.set_result((response, rest))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.done.done():
            self.done.set_exception(
                BackendError(502, "the backend closed the connection during the handshake")
            )


@dataclass(slots=True)
class BackendConnection:
    transport: asyncio.Transport
    handshake: BackendHandshake
    response: Response
    rest: bytes  # bytes after the 101 head: the backend's first frames, to relay first


async def _open(
    loop: asyncio.AbstractEventLoop, url: BackendUrl, ca_pem: str
) -> tuple[asyncio.Transport, BackendHandshake]:
    """TCP (+ TLS) to the first of the backend's addresses that accepts.

    Raises:
        OSError: none did (the last error); ssl.SSLError: the TLS handshake failed.
    """
    addresses = await RESOLVER.addresses(url.host, url.port)
    error: OSError | None = None
    for address in addresses:
        try:
            transport, proto = await loop.create_connection(
                BackendHandshake,
                address,
                url.port,
                ssl=ssl_context(ca_pem) if url.secure else None,
                server_hostname=url.host if url.secure else None,
            )
        except ssl.SSLError:
            raise
        except OSError as exc:
            error = exc
            continue
        return cast(asyncio.Transport, transport), proto
    RESOLVER.forget(url.host, url.port)  # the backend may have moved: ask again next time
    assert error is not None
    raise error


async def connect(
    url: BackendUrl,
    ca_pem: str,
    headers: list[tuple[str, str]],
    timeout: float,  # noqa: ASYNC109 - one deadline for connect + TLS + upgrade
) -> BackendConnection:
    """Connect and upgrade; on any failure nothing stays open.

    Raises:
        BackendError: 504 on timeout, 502 for refused/DNS/TLS/non-101/bad accept key.
    """
    loop = asyncio.get_running_loop()
    key = new_key()
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                transport, proto = await _open(loop, url, ca_pem)
            except ssl.SSLError as exc:
                raise BackendError(502, f"TLS handshake with the backend failed: {exc}") from None
            except OSError as exc:
                raise BackendError(502, f"cannot connect to the backend: {exc}") from None
            transport.write(build_request(url, key, headers))
            response, rest = await proto.done
        try:
            check_backend_response(response, key)
        except ValueError as exc:
            raise BackendError(502, str(exc)) from None
        if proto.lost and not rest:
            raise BackendError(502, "the backend closed the connection after the handshake")
        return BackendConnection(transport, proto, response, rest)
    except TimeoutError:
        if transport is not None:
            transport.abort()
        raise BackendError(504, "the backend did not complete the handshake in time") from None
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
