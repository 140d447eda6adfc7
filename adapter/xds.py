"""The ADS server: streams each node what the snapshot cache holds, and records ACKs and NACKs.

State of the world only. Per stream and type URL the server remembers the version it last sent;
it sends the snapshot whenever the snapshot's version for that type differs, with a fresh nonce.
A NACK does not trigger a resend of the same version (that would loop); the next snapshot does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from adapter.cache import SnapshotCache
from wsgate_common import grpc_tls

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
# Keepalives and message sizes from wsgate_common/grpc_tls.py, plus:
SERVER_OPTIONS: list[grpc_tls.Option] = grpc_tls.merge_options(
    grpc_tls.SERVER_OPTIONS,
    [("grpc.so_reuseport", 0)],  # a second adapter on the same port must fail, not share it
)


@dataclass
class Nack:
    version: str
    nonce: str
    message: str
    at: float


@dataclass
class TypeStatus:
    """One type URL on one stream: what was sent, what the client took, what it refused."""

    sent_version: str = ""
    nonce: str = ""
    acked_version: str = ""
    last_nack: Nack | None = None
    # nonce -> version of the latest few responses, to know what a late reply refers to
    in_flight: dict[str, str] = field(default_factory=dict)


@dataclass
class ClientStatus:
    stream_id: int
    node_id: str
    peer: str
    connected_at: float
    types: dict[str, TypeStatus] = field(default_factory=dict)


@dataclass
class XdsStatus:
    """What the adapter knows about its xDS clients, for the status endpoint and for tests."""

    clients: dict[int, ClientStatus] = field(default_factory=dict)
    last_nack: dict[str, dict[str, Nack]] = field(default_factory=dict)  # node -> type -> nack
    acks: int = 0
    nacks: int = 0
    # (node, type URL) -> count, for /metrics
    acks_by: dict[tuple[str, ...], int] = field(default_factory=dict)
    nacks_by: dict[tuple[str, ...], int] = field(default_factory=dict)

    def connected(self) -> dict[tuple[str, ...], int]:
        """(node,) -> number of connected clients."""
        counts: dict[tuple[str, ...], int] = {}
        for client in self.clients.values():
            counts[(client.node_id,)] = counts.get((client.node_id,), 0) + 1
        return counts

    def superseded(self, node: str, type_url: str) -> None:
        """Forget the node's last NACK of ``type_url`` once no connected client still holds
        one (every client that refused has since taken a newer version)."""
        if any(
            c.node_id == node and (s := c.types.get(type_url)) is not None and s.last_nack
            for c in self.clients.values()
        ):
            return
        by_type = self.last_nack.get(node)
        if by_type is not None and by_type.pop(type_url, None) is not None:
            log.info("node %s: the NACK of %s is superseded by a newer version", node, type_url)
            if not by_type:
                del self.last_nack[node]

    def as_dict(self) -> dict[str, object]:
        def nack(n: Nack | None) -> dict[str, object] | None:
            return None if n is None else {"version": n.version, "message": n.message, "at": n.at}

        return {
            "acks": self.acks,
            "nacks": self.nacks,
            "clients": [
                {
                    "node": c.node_id,
                    "peer": c.peer,
                    "connectedAt": c.connected_at,
                    "types": {
                        t: {
                            "sent": s.sent_version,
                            "acked": s.acked_version,
                            "lastNack": nack(s.last_nack),
                        }
                        for t, s in c.types.items()
                    },
                }
                for c in self.clients.values()
            ],
            "lastNacks": {
                node: {t: nack(n) for t, n in by_type.items()}
                for node, by_type in self.last_nack.items()
            },
        }


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Serves StreamAggregatedResources from a :class:`SnapshotCache`."""

    def __init__(self, cache: SnapshotCache, status: XdsStatus | None = None) -> None:
        self.cache = cache
        self.status = status if status is not None else XdsStatus()
        self._ids = itertools.count(1)

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = _Stream(self, next(self._ids), unquote(context.peer()))
        try:
            await stream.serve(request_iterator, context)
        finally:
            stream.close()

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not supported")


class _Stream:
    """One client stream: a reader task takes requests, the serving loop sends responses."""

    def __init__(self, server: AdsServicer, stream_id: int, peer: str) -> None:
        self.server = server
        self.stream_id = stream_id
        self.peer = peer
        self.node_id: str | None = None
        self.types: dict[str, TypeStatus] = {}
        self.wake = asyncio.Event()
        self.reader_done = False
        self.client: ClientStatus | None = None

    async def serve(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        reader = asyncio.create_task(self._read(requests))
        try:
            while not self.reader_done:
                await self.wake.wait()
                self.wake.clear()
                if self.node_id is None:
                    continue
                snapshot = self.server.cache.ensure(self.node_id)
                for type_url, state in list(self.types.items()):
                    version = snapshot.version(type_url)
                    if version == state.sent_version:
                        continue
                    state.sent_version = version
                    state.nonce = uuid.uuid4().hex
                    state.in_flight[state.nonce] = version
                    while len(state.in_flight) > MAX_IN_FLIGHT:
                        del state.in_flight[next(iter(state.in_flight))]
                    await context.write(
                        discovery_pb2.DiscoveryResponse(
                            version_info=version,
                            type_url=type_url,
                            nonce=state.nonce,
                            resources=snapshot.of_type(type_url),
                        )
                    )
                    log.debug("sent %s v%s to %s", type_url, version, self.node_id)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.debug("xDS stream %s reader ended: %r", self.stream_id, reader.exception())

    async def _read(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest]) -> None:
        try:
            async for request in requests:
                self._on_request(request)
        finally:
            self.reader_done = True
            self.wake.set()

    def _on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if self.node_id is None:
            if not request.node.id:
                log.warning("xDS request from %s without node id ignored", self.peer)
                return
            self.node_id = request.node.id
            self.client = ClientStatus(self.stream_id, self.node_id, self.peer, time.time())
            self.client.types = self.types
            self.server.status.clients[self.stream_id] = self.client
            self.server.cache.watch(self.node_id, self.wake)
            log.info("xDS client %s connected as node %s", self.peer, self.node_id)
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None or not request.response_nonce:
            # A (re)subscription: the version it names is what the client already holds.
            state = self.types.setdefault(type_url, TypeStatus())
            state.sent_version = request.version_info
            state.acked_version = request.version_info
            state.nonce = ""
            self.wake.set()
            return
        # A reply to a superseded response still says what the client holds; requests arrive in
        # order, so recording it cannot overwrite newer news. Nothing is resent because of it.
        if request.HasField("error_detail"):
            message = request.error_detail.message
            refused = state.in_flight.get(request.response_nonce, "")
            nack = Nack(refused, request.response_nonce, message, time.time())
            state.last_nack = nack
            self.server.status.nacks += 1
            key = (self.node_id or "", type_url)
            self.server.status.nacks_by[key] = self.server.status.nacks_by.get(key, 0) + 1
            self.server.status.last_nack.setdefault(self.node_id or "", {})[type_url] = nack
            log.warning(
                "node %s (%s) rejected %s version %s: %s",
                self.node_id,
                self.peer,
                type_url,
                refused or "?",
                message,
            )
        else:
            state.acked_version = request.version_info
            self.server.status.acks += 1
            key = (self.node_id or "", type_url)
            self.server.status.acks_by[key] = self.server.status.acks_by.get(key, 0) + 1
            if state.last_nack is not None and state.last_nack.version != request.version_info:
                state.last_nack = None  # a newer snapshot was taken: the refusal is history
                self.server.status.superseded(key[0], type_url)
            log.debug("node %s acked %s v%s", self.node_id, type_url, request.version_info)

    def close(self) -> None:
        if self.node_id is not None:
            self.server.cache.unwatch(self.node_id, self.wake)
            log.info("xDS client %s (node %s) disconnected", self.peer, self.node_id)
        self.server.status.clients.pop(self.stream_id, None)


async def start_xds_server(
    servicer: AdsServicer, host: str, port: int, tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server for ``servicer`` (mTLS or plaintext per ``tls``); returns it and
    the bound port."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    try:
        bound = tls.add_port(server, f"{host}:{port}")
    except RuntimeError as exc:  # grpc reports a taken port this way
        raise OSError(f"cannot bind xDS port {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind xDS port {host}:{port}")
    await server.start()
    return server, bound
