"""The gRPC HandshakeService: one Check per WebSocket handshake, one log line per decision,
WatchConnections, the stream of connection rules routers apply to their live connections, and
Reconcile, which of a router's live connections the current state refuses (asked on each stream
(re)open, so changes made while this enforcer was down still close connections)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
import grpc.aio

from enforcer.decide import DEFAULT_OPTIONS, Options, decide, deny
from enforcer.denials import Denial, ErrorCode, UnknownKeyError, explain
from enforcer.issuers import IssuerRegistry
from enforcer.jwks import JwksRefresher
from enforcer.keymanagers import IssuerBook
from enforcer.metrics import EnforcerMetrics
from enforcer.policies import PolicyStore
from enforcer.rules import POLICY_VIOLATION, refusal
from enforcer.subscriptions import EMPTY_STATE, SubscriptionState, SubscriptionStore
from enforcer.token_cache import TokenCache
from enforcer.tokens import Claims, validate
from enforcer.watch import ConnectionWatch, ListenerTooSlow
from wsgate_common.resources import SUBSCRIPTION_DATA_TYPE_URLS
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

log = logging.getLogger("enforcer.decisions")
watch_log = logging.getLogger("enforcer.watch")

READY_WAIT = 5.0  # seconds Reconcile waits for a complete state before answering UNAVAILABLE
READY_POLL = 0.02
MAX_RECONCILE = 10_000  # identities per Reconcile call

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
        issuers: IssuerRegistry | IssuerBook,
        subscriptions: SubscriptionStore | None = None,
        clock: Callable[[], float] = time.time,
        *,
        refresher: JwksRefresher | None = None,
        watch: ConnectionWatch | None = None,
        metrics: EnforcerMetrics | None = None,
        token_cache: TokenCache | None = None,
        options: Options = DEFAULT_OPTIONS,
    ) -> None:
        self.policies = policies
        self.issuers = issuers
        self.subscriptions = subscriptions
        self.clock = clock
        self.refresher = refresher
        self.watch = watch if watch is not None else ConnectionWatch()
        self.metrics = metrics
        self.options = options
        # Verified tokens; emptied whenever the issuer registry is replaced (see TokenCache).
        self.tokens = token_cache if token_cache is not None else TokenCache()
        self.ready_wait = READY_WAIT

    def ready(self) -> bool:
        """Whether this enforcer holds a complete state: every API policy and every kind of
        subscription data applied at least once (what Reconcile may judge connections by)."""
        if not self.policies.applied_once:
            return False
        if self.subscriptions is None:
            return True
        versions = self.subscriptions.current.versions
        return all(type_url in versions for type_url in SUBSCRIPTION_DATA_TYPE_URLS)

    async def wait_ready(self) -> bool:
        """Wait up to :data:`READY_WAIT` for :meth:`ready` (the xDS updates land on this loop)."""
        try:
            async with asyncio.timeout(self.ready_wait):
                while not self.ready():  # noqa: ASYNC110 - the state is set by xDS handlers
                    await asyncio.sleep(READY_POLL)
        except TimeoutError:
            return False
        return True

    def reconcile(self, request: enforcer_pb2.ReconcileRequest) -> enforcer_pb2.ReconcileResponse:
        """The identities in ``request`` the current state refuses (pure over one state read)."""
        policies, state = self.policies.current, self.state()
        response = enforcer_pb2.ReconcileResponse()
        for index, connection in enumerate(request.connections):
            reason = refusal(connection, policies, state)
            if reason is not None:
                response.closes.add(index=index, close_code=POLICY_VIOLATION, reason=reason)
        return response

    def registry(self) -> IssuerRegistry:
        return self.issuers.registry if isinstance(self.issuers, IssuerBook) else self.issuers

    def state(self) -> SubscriptionState:
        return self.subscriptions.current if self.subscriptions is not None else EMPTY_STATE

    def authenticate(self, token: str) -> Claims:
        registry, now = self.registry(), self.clock()
        claims = self.tokens.get(token, registry, now)
        if claims is None:
            claims = validate(token, registry, now)
            self.tokens.put(token, registry, claims)
        return claims

    def _decide(
        self, request: enforcer_pb2.HandshakeRequest
    ) -> tuple[enforcer_pb2.HandshakeResponse, UnknownKeyError | None]:
        unknown: list[UnknownKeyError] = []

        def authenticate(token: str) -> Claims:
            try:
                return self.authenticate(token)
            except UnknownKeyError as exc:
                unknown.append(exc)
                raise

        try:
            response = decide(
                request,
                self.policies.get(request.api_id),
                authenticate,
                self.state(),
                self.options,
            )
        except Exception:
            log.exception("handshake check failed: request %s", request.request_id)
            response = deny(INTERNAL_DENIAL)
        return response, (unknown[0] if unknown else None)

    def check(self, request: enforcer_pb2.HandshakeRequest) -> enforcer_pb2.HandshakeResponse:
        """The decision for one request (no JWKS refresh), with the log line."""
        started = time.perf_counter()
        response, _ = self._decide(request)
        return self._logged(request, response, started)

    async def check_async(
        self, request: enforcer_pb2.HandshakeRequest
    ) -> enforcer_pb2.HandshakeResponse:
        """The decision; a token signed with a key the issuer does not hold yet makes its JWKS
        be fetched (waiting about a second at most) and the decision taken once more."""
        started = time.perf_counter()
        version = self.watch.data_version
        response, unknown = self._decide(request)
        if unknown is not None and self.refresher is not None:
            if await self.refresher.refresh(unknown.issuer):
                version = self.watch.data_version
                response, _ = self._decide(request)
        response.data_version = version
        return self._logged(request, response, started)

    def _logged(
        self,
        request: enforcer_pb2.HandshakeRequest,
        response: enforcer_pb2.HandshakeResponse,
        started: float,
    ) -> enforcer_pb2.HandshakeResponse:
        elapsed = time.perf_counter() - started
        elapsed_ms = elapsed * 1000
        if self.metrics is not None:
            self.metrics.decided(response.allowed, response.http_status, elapsed)
        if response.allowed:
            outcome = f"allowed {response.key_type}" + (
                f" ({response.credential_kind})" if response.credential_kind else ""
            )
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
        return await self.check_async(request)

    async def WatchConnections(
        self, request: enforcer_pb2.WatchConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[enforcer_pb2.ConnectionRule]:
        who = request.router_id or context.peer()
        watch_log.info(
            "router %s watches connections (%d rules in force)", who, len(self.watch.in_force())
        )
        # Headers go out at once, so a router knows it is connected before any rule exists.
        await context.send_initial_metadata(())
        try:
            async for rule in self.watch.stream():
                if isinstance(rule, str):
                    yield enforcer_pb2.ConnectionRule(data_version=rule)
                else:
                    yield rule.to_proto()
        except ListenerTooSlow:
            watch_log.warning("router %s fell too far behind; ending its stream", who)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too far behind; reconnect")
        finally:
            watch_log.info("router %s stopped watching", who)

    async def Reconcile(
        self, request: enforcer_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> enforcer_pb2.ReconcileResponse:
        who = request.router_id or context.peer()
        if len(request.connections) > MAX_RECONCILE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_RECONCILE} connections per call, got {len(request.connections)}",
            )
        if not await self.wait_ready():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "no complete state from the adapter yet; ask again"
            )
        response = self.reconcile(request)
        watch_log.info(
            "router %s reconciled %d live identities: %d to close%s",
            who,
            len(request.connections),
            len(response.closes),
            "".join(
                f"; {request.connections[c.index].api_id or '-'}/"
                f"{request.connections[c.index].application_id or '-'}: {c.reason}"
                for c in response.closes[:5]
            ),
        )
        return response
