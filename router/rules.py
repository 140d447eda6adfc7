"""The enforcer -> router rules stream (HandshakeService.WatchConnections), as a thin gRPC shell.

One long-lived server stream. On every (re)connect the enforcer sends every rule in force, then
each new one; each rule goes to ``on_rule`` (applying one is idempotent, so a replay after a
reconnect is harmless). The stream reconnects forever with capped exponential backoff
(0.1 s doubling to 5 s, back to 0.1 s once a stream was up) and logs one warning per
disconnect; failed retries are logged at DEBUG only. An enforcer that does not implement the
RPC yet (UNIMPLEMENTED) is logged once, then retried quietly like any other failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import grpc
import grpc.aio

from router.frames import CloseCode, truncate_utf8
from wsgate_common import grpc_tls
from wsgate_proto import enforcer_pb2, enforcer_pb2_grpc

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
DEFAULT_REASON = "connection closed by policy"

# Keepalive (the enforcer's server accepts pings every 10 s) and message sizes: one list for
# every component, wsgate_common/grpc_tls.py.
CHANNEL_OPTIONS = list(grpc_tls.CHANNEL_OPTIONS)

RuleHandler = Callable[[enforcer_pb2.ConnectionRule], object]


def close_code_of(rule: enforcer_pb2.ConnectionRule) -> int:
    """The rule's close code when a client may receive it on the wire, else 1008."""
    code = rule.close_code
    if code in (1000, 1001, 1008, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999:
        return code
    return CloseCode.POLICY_VIOLATION


def reason_of(rule: enforcer_pb2.ConnectionRule) -> str:
    """The rule's reason cut to what fits a close frame (123 bytes, never mid-character)."""
    return truncate_utf8(rule.reason or DEFAULT_REASON).decode("utf-8")


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
    ) -> None:
        self.address = address
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

    def _headers_done(self, future: asyncio.Future[object], call: grpc.aio.Call) -> None:
        # An error answer (e.g. UNIMPLEMENTED) also completes the headers: not "up".
        if not future.cancelled() and future.exception() is None and not call.done():
            self._mark_up()

    async def _stream_once(self) -> None:
        async with self.tls.aio_channel(self.address) as channel:
            stub = enforcer_pb2_grpc.HandshakeServiceStub(channel)
            call = stub.WatchConnections(
                enforcer_pb2.WatchConnectionsRequest(router_id=self.router_id)
            )
            # The headers may come before any rule (an enforcer with no rule in force).
            headers = asyncio.ensure_future(call.initial_metadata())
            headers.add_done_callback(lambda done: self._headers_done(done, call))
            try:
                async for rule in call:
                    self._mark_up()
                    self.rules += 1
                    try:
                        self._on_rule(rule)
                    except Exception:  # one bad rule must not end the stream
                        log.exception("applying rule %s failed", describe(rule))
            finally:
                headers.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await headers
