"""The enforcer -> router rules stream (HandshakeService.WatchConnections), as a thin gRPC shell.

One long-lived server stream. On every (re)connect the enforcer sends every rule in force, then
each new one; each rule goes to ``on_rule`` (applying one is idempotent, so a replay after a
reconnect is harmless). The stream reconnects forever with capped exponential backoff
(0.1 s doubling to 1 s, back to 0.1 s once a stream was up: a restarted enforcer is heard from
within about a second) and logs one warning per disconnect; failed retries are logged at DEBUG
only. An enforcer that does not implement the RPC yet (UNIMPLEMENTED) is logged once, then
retried quietly like any other failure.

Each time a stream opens, the watcher also reconciles (HandshakeService.Reconcile): it sends the
distinct identities of the live connections (API, application, subscription, key type, token id;
never a credential) in batches and closes those the enforcer's current state refuses. Rules are
derived from changes, which an enforcer forgets when it restarts; reconciling catches what
changed while it was down (a subscription removed, an API undeployed). UNAVAILABLE (the enforcer
has no complete state yet) is retried with the same backoff while the stream stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import grpc
import grpc.aio

from router.frames import CloseCode, truncate_utf8
from router.registry import Identity
from wsgate_common import grpc_tls
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 1.0
RECONCILE_BATCH = 5_000  # identities per Reconcile call (the enforcer takes up to 10 000)
RECONCILE_TIMEOUT = 15.0  # the enforcer may wait ~5 s for its state before answering
DEFAULT_REASON = "connection closed by policy"

# Keepalive (the enforcer's server accepts pings every 10 s) and message sizes: one list for
# every component, wsgate_common/grpc_tls.py.
CHANNEL_OPTIONS = list(grpc_tls.CHANNEL_OPTIONS)

RuleHandler = Callable[[enforcer_pb2.ConnectionRule], object]
StreamHandler = Callable[[bool], object]  # True: the stream is up; False: it ended


class Reconcilable(Protocol):
    """The live connections as Reconcile sees them (router.live.LiveConnections)."""

    def snapshot(self) -> list[tuple[Identity, str]]: ...

    def close_identity(
        self,
        identity: Identity,
        subscription_id: str,
        code: int,
        reason: str,
        cause: str,
        checked_before: float | None = None,
    ) -> int: ...


def wire_code(code: int) -> int:
    """``code`` when a client may receive it on the wire, else 1008."""
    if code in (1000, 1001, 1008, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999:
        return code
    return CloseCode.POLICY_VIOLATION


def wire_reason(reason: str) -> str:
    """``reason`` cut to what fits a close frame (123 bytes, never mid-character)."""
    return truncate_utf8(reason or DEFAULT_REASON).decode("utf-8")


def close_code_of(rule: enforcer_pb2.ConnectionRule) -> int:
    """The rule's close code when a client may receive it on the wire, else 1008."""
    return wire_code(rule.close_code)


def reason_of(rule: enforcer_pb2.ConnectionRule) -> str:
    """The rule's reason cut to what fits a close frame (123 bytes, never mid-character)."""
    return wire_reason(rule.reason)


def reconcile_batches(
    pairs: list[tuple[Identity, str]], router_id: str, size: int = RECONCILE_BATCH
) -> list[enforcer_pb2.ReconcileRequest]:
    """The Reconcile requests for these identities, ``size`` at most each (pure)."""
    return [
        enforcer_pb2.ReconcileRequest(
            router_id=router_id,
            connections=[
                enforcer_pb2.LiveConnection(
                    api_id=identity.api_id,
                    application_id=identity.application_id,
                    subscription_id=subscription_id,
                    key_type=identity.key_type,
                    token_id=identity.token_id,
                )
                for identity, subscription_id in pairs[start : start + size]
            ],
        )
        for start in range(0, len(pairs), size)
    ]


def describe(rule: enforcer_pb2.ConnectionRule) -> str:
    """``token_id=.. api_id=..`` with only the selectors the rule uses, for logs."""
    parts = [
        f"{name}={value}"
        for name, value in (
            ("token_id", rule.token_id),
            ("application_id", rule.application_id),
            ("api_id", rule.api_id),
            ("key_type", rule.key_type),
        )
        if value
    ]
    return " ".join(parts) or "(no selector)"


class RuleWatcher:
    """Keeps a WatchConnections stream open to the enforcer at ``address`` forever."""

    def __init__(
        self,
        address: str,
        on_rule: RuleHandler,
        router_id: str = "",
        *,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT,
        live: Reconcilable | None = None,
        on_stream: StreamHandler | None = None,
    ) -> None:
        self.address = address
        self._on_stream = on_stream
        self.live = live
        self.router_id = router_id
        self.tls = tls
        self._on_rule = on_rule
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._up = False  # the current stream got its headers or a rule from the enforcer
        self.connected = asyncio.Event()  # set while a stream is up (tests wait on it)
        self.rules = 0  # rules received since start
        self.attempts = 0
        self.delays: deque[float] = deque(maxlen=32)  # the last backoff delays, for tests
        self.reconciles = 0  # Reconcile rounds completed (every batch answered)
        self.reconcile_closed = 0  # connections closed by them
        self.reconciled = asyncio.Event()  # set after each completed round (tests wait on it)
        self._stub: enforcer_pb2_grpc.HandshakeServiceStub | None = None
        self._reconciling: asyncio.Task[None] | None = None
        self._told_no_reconcile = False

    async def run(self) -> None:
        """Returns only by cancellation."""
        backoff = self._backoff_initial
        was_up = False
        ever_up = False  # before the first stream, a failure is the enforcer still starting
        told_unimplemented = False
        while True:
            self._up = False
            self.attempts += 1
            code: grpc.StatusCode | None = None
            try:
                await self._stream_once()
                reason = "stream ended by the enforcer"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                reason = self.tls.describe(exc)
            except Exception as exc:  # a bug must not stop the reconnect loop
                reason = repr(exc)
            finally:
                self.connected.clear()
                if self._on_stream is not None:
                    self._on_stream(False)
            if self._up:
                backoff = self._backoff_initial
                was_up = ever_up = True
            if code is grpc.StatusCode.UNIMPLEMENTED:
                if not told_unimplemented:
                    log.warning(
                        "enforcer at %s does not implement WatchConnections: live connections "
                        "cannot be closed by its rules until it does; retrying",
                        self.address,
                    )
                    told_unimplemented = True
                    was_up = False
                else:
                    log.debug("WatchConnections still unimplemented at %s", self.address)
            elif was_up:
                log.warning(
                    "rules stream to enforcer %s lost (%s); reconnecting", self.address, reason
                )
                was_up = False
            elif not ever_up and self.attempts == 1:
                # the usual start-up order (router before enforcer): the status name only
                waiting = code.name if code is not None else reason
                log.info("enforcer %s not reachable yet (%s); retrying", self.address, waiting)
            else:
                log.debug("rules stream reconnect to %s failed (%s)", self.address, reason)
            self.delays.append(backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    def _mark_up(self) -> None:
        if not self._up:
            self._up = True
            self.connected.set()
            log.info("rules stream to enforcer %s open", self.address)
            if self._on_stream is not None:
                self._on_stream(True)
            if self.live is not None and self._stub is not None:
                self._reconciling = asyncio.ensure_future(self._reconcile(self._stub, self.live))

    async def _reconcile(
        self, stub: enforcer_pb2_grpc.HandshakeServiceStub, live: Reconcilable
    ) -> None:
        """Reconcile until one round succeeds (retrying with backoff) or the stream ends."""
        delay = self._backoff_initial
        failures = 0
        while True:
            try:
                closed = await self.reconcile_once(stub, live)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                    if not self._told_no_reconcile:
                        log.warning(
                            "enforcer at %s does not implement Reconcile: connections refused by "
                            "changes made while it was down stay open",
                            self.address,
                        )
                        self._told_no_reconcile = True
                    return
                failures += 1
                log.log(
                    logging.INFO if failures == 1 else logging.DEBUG,
                    "reconciling live connections with %s failed (%s); retrying",
                    self.address,
                    self.tls.describe(exc),
                )
            except Exception:  # a bug must not end the stream
                log.exception("reconciling live connections failed")
                return
            else:
                self.reconciles += 1
                self.reconcile_closed += closed
                self.reconciled.set()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def reconcile_once(
        self, stub: enforcer_pb2_grpc.HandshakeServiceStub, live: Reconcilable
    ) -> int:
        """One round: every distinct live identity to the enforcer; returns connections closed.

        Raises:
            grpc.aio.AioRpcError: a call failed (nothing after it was asked).
        """
        started = time.monotonic()
        pairs = live.snapshot()
        closed = refused = 0
        for start, request in zip(
            range(0, len(pairs), RECONCILE_BATCH),
            reconcile_batches(pairs, self.router_id),
            strict=True,
        ):
            batch = pairs[start : start + RECONCILE_BATCH]
            response = await stub.Reconcile(request, timeout=RECONCILE_TIMEOUT)
            for verdict in response.closes:
                if not 0 <= verdict.index < len(batch):
                    continue
                identity, subscription_id = batch[verdict.index]
                refused += 1
                closed += live.close_identity(
                    identity,
                    subscription_id,
                    wire_code(verdict.close_code),
                    wire_reason(verdict.reason),
                    "reconcile",
                    checked_before=started,  # a later Check may have seen a later state
                )
        log.log(
            logging.INFO if pairs else logging.DEBUG,  # no live connection: nothing was asked
            "reconciled %d live identities with enforcer %s in %.0f ms: %d refused now, "
            "%d connections closed",
            len(pairs),
            self.address,
            (time.monotonic() - started) * 1000,
            refused,
            closed,
        )
        return closed

    def _headers_done(self, future: asyncio.Future[object], call: grpc.aio.Call) -> None:
        # An error answer (e.g. UNIMPLEMENTED) also completes the headers: not "up".
        if not future.cancelled() and future.exception() is None and not call.done():
            self._mark_up()

    async def _stream_once(self) -> None:
        async with self.tls.aio_channel(self.address) as channel:
            stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
            self._stub = stub
            call = stub.WatchConnections(
                enforcer_pb2.WatchConnectionsRequest(router_id=self.router_id)
            )
            # The headers may come before any rule (an enforcer with no rule in force).
            headers = asyncio.ensure_future(call.initial_metadata())
            headers.add_done_callback(lambda done: self._headers_done(done, call))
            try:
                async for rule in call:
                    self._mark_up()
                    if not rule.data_version:  # a version notice is not a rule
                        self.rules += 1
                    try:
                        self._on_rule(rule)
                    except Exception:  # one bad rule must not end the stream
                        log.exception("applying rule %s failed", describe(rule))
            finally:
                self._stub = None
                headers.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await headers
                reconciling, self._reconciling = self._reconciling, None
                if reconciling is not None:
                    reconciling.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reconciling
