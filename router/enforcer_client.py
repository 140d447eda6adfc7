"""Asking the enforcer whether a handshake may pass: one unary gRPC call with a deadline."""

from __future__ import annotations

import grpc
import grpc.aio

from wsgate_common import grpc_tls
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc


class EnforcerUnavailable(Exception):
    """The enforcer did not answer in time or could not be reached (the client gets 503)."""


class EnforcerClient:
    """A long-lived channel to the enforcer's HandshakeService."""

    def __init__(
        self, address: str, timeout: float = 2.0, tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        # mTLS or plaintext, keepalives and message sizes: wsgate_common/grpc_tls.py.
        self._channel = tls.aio_channel(address)
        self._stub = enforcer_pb2_grpc.HandshakeServiceStub(self._channel)

    async def check(self, request: enforcer_pb2.HandshakeRequest) -> enforcer_pb2.HandshakeResponse:
        """Raises:
        EnforcerUnavailable: any RPC failure, including the deadline.
        """
        try:
            response: enforcer_pb2.HandshakeResponse = await self._stub.Check(
                request, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise EnforcerUnavailable(self.tls.describe(exc)) from None
        return response

    async def close(self) -> None:
        await self._channel.close()
