"""ADS (state of the world) client: how routers and enforcers receive their config from the adapter.

One bidirectional ``StreamAggregatedResources`` stream carries every subscribed type. Each
response goes to the handler registered for its type URL; a handler that returns applies the
update (ACK), one that raises rejects it (NACK) and must leave its last good state in place.
The client reconnects forever with capped exponential backoff and, on reconnect, tells the
server which versions it already holds so an unchanged snapshot need not be resent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping

import grpc
import grpc.aio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from wsgate_common import grpc_tls

log = logging.getLogger(__name__)

Handler = Callable[[str, list[any_pb2.Any]], Awaitable[None] | None]

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
INVALID_ARGUMENT = 3  # google.rpc.Code: what a NACK reports

# Keepalive, message sizes: one list for every component (wsgate_common/grpc_tls.py).
CHANNEL_OPTIONS = list(grpc_tls.CHANNEL_OPTIONS)


class XdsClient:
    """Subscribes ``node_id`` to the types in ``handlers`` on the ADS server at ``address``."""

    def __init__(
        self,
        address: str,
        node_id: str,
        handlers: Mapping[str, Handler],
        *,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT,
    ) -> None:
        if not handlers:
            raise ValueError("XdsClient needs at least one type URL handler")
        self.address = address
        self.node_id = node_id
        self.tls = tls
        self._handlers = dict(handlers)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._versions: dict[str, str] = {}
        self._applied: set[str] = set()
        self._connected = False
        self._got_response = False
        self.ready = asyncio.Event()
        self.nacks = 0

    @property
    def versions(self) -> dict[str, str]:
        """Last ACKed version per type URL (a copy)."""
        return dict(self._versions)

    @property
    def connected(self) -> bool:
        """True while a stream to the server is open."""
        return self._connected

    def _node(self) -> base_pb2.Node:
        return base_pb2.Node(id=self.node_id, user_agent_name="wsgate")

    def _initial_requests(self) -> list[discovery_pb2.DiscoveryRequest]:
        return [
            discovery_pb2.DiscoveryRequest(
                node=self._node(),
                type_url=type_url,
                version_info=self._versions.get(type_url, ""),
            )
            for type_url in self._handlers
        ]

    async def run(self) -> None:
        """Keep a stream open forever; returns only by cancellation."""
        backoff = self._backoff_initial
        was_up = True  # so the very first failure is logged too
        while True:
            self._got_response = False
            try:
                await self._stream_once()
                reason = "stream closed by server"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                reason = self.tls.describe(exc)
            except Exception as exc:  # a bug must not stop the reconnect loop
                reason = repr(exc)
            finally:
                self._connected = False
            if self._got_response:  # a healthy stream: start the backoff over
                backoff = self._backoff_initial
                was_up = True
            if was_up:
                log.warning("xDS stream to %s lost (%s); reconnecting", self.address, reason)
                was_up = False
            else:
                log.debug("xDS reconnect to %s failed (%s)", self.address, reason)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    async def _stream_once(self) -> None:
        """One stream's life, until the server ends it or the connection fails."""
        async with self.tls.aio_channel(self.address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources()
            for request in self._initial_requests():
                await call.write(request)
            await call.wait_for_connection()
            self._connected = True
            log.info("xDS stream to %s open (node %s)", self.address, self.node_id)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                self._got_response = True
                await call.write(await self._apply(response))

    async def _apply(
        self, response: discovery_pb2.DiscoveryResponse
    ) -> discovery_pb2.DiscoveryRequest:
        """Run the handler for one response and build the ACK or NACK to send back."""
        type_url = response.type_url
        handler = self._handlers.get(type_url)
        try:
            if handler is None:
                raise ValueError(f"not subscribed to {type_url}")
            result = handler(response.version_info, list(response.resources))
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.nacks += 1
            log.warning(
                "rejecting %s version %s: %s", type_url, response.version_info, exc, exc_info=True
            )
            return discovery_pb2.DiscoveryRequest(
                node=self._node(),
                type_url=type_url,
                version_info=self._versions.get(type_url, ""),
                response_nonce=response.nonce,
                error_detail=status_pb2.Status(code=INVALID_ARGUMENT, message=str(exc)),
            )
        self._versions[type_url] = response.version_info
        self._applied.add(type_url)
        if not self.ready.is_set() and self._applied >= self._handlers.keys():
            self.ready.set()
        log.debug("applied %s version %s", type_url, response.version_info)
        return discovery_pb2.DiscoveryRequest(
            node=self._node(),
            type_url=type_url,
            version_info=response.version_info,
            response_nonce=response.nonce,
        )
