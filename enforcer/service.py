"""The gRPC HandshakeService: one Check per WebSocket handshake, one log line per decision."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from enforcer.decide import decide, deny
from enforcer.denials import Denial, ErrorCode, explain
from enforcer.issuers import IssuerRegistry
from enforcer.policies import PolicyStore
from enforcer.subscriptions import NO_SUBSCRIPTION_CHECKS, SubscriptionChecker
from enforcer.tokens import Claims, validate
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

log = logging.getLogger("enforcer.decisions")

INTERNAL_DENIAL = Denial(
    500,
    ErrorCode.INTERNAL_ERROR,
    "Internal Server Error",
    "The enforcer could not evaluate this request",
)


class HandshakeService(enforcer_pb2_grpc.HandshakeServiceServicer):
    """Validates the token and decides; never raises to gRPC (a bug becomes a 500 denial)."""

    def __init__(
        self,
        policies: PolicyStore,
        issuers: IssuerRegistry,
        subscriptions: SubscriptionChecker = NO_SUBSCRIPTION_CHECKS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.issuers = issuers
        self.subscriptions = subscriptions
        self.clock = clock

    def authenticate(self, token: str) -> Claims:
        return validate(token, self.issuers, self.clock())

    def check(self, request: enforcer_pb2.HandshakeRequest) -> enforcer_pb2.HandshakeResponse:
        """The decision for one request, with the log line."""
        started = time.perf_counter()
        try:
            response = decide(
                request, self.policies.get(request.api_id), self.authenticate, self.subscriptions
            )
        except Exception:
            log.exception("handshake check failed: request %s", request.request_id)
            response = deny(INTERNAL_DENIAL)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.allowed:
            outcome = f"allowed {response.key_type}"
        else:
            outcome = f"denied {response.http_status} {explain(response.error_code)}"
        log.info(
            "request %s api %s topic %s: %s%s (%.2f ms)",
            request.request_id or "-",
            request.api_id or "-",
            request.topic or "-",
            outcome,
            f": {response.description}" if response.description else "",
            elapsed_ms,
            extra={
                "request_id": request.request_id,
                "api_id": request.api_id,
                "topic": request.topic,
                "allowed": response.allowed,
                "http_status": response.http_status,
                "error_code": response.error_code,
                "latency_ms": round(elapsed_ms, 3),
            },
        )
        return response

    async def Check(
        self, request: enforcer_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> enforcer_pb2.HandshakeResponse:
        return self.check(request)
