"""Keeping the adapter in step with the database over ``wsgate.deploy.v1.DeploymentService``.

Two paths reach the adapter:

* request handlers push the one API they change (``BlockingGateway``) *before* committing, so
  an adapter that rejects the API (bad definition, context clash) rejects the REST call too;
* ``AdapterSync`` polls ``Status`` and sends the full deployed set with ``Sync`` whenever the
  adapter restarted (new boot id) or a push could not reach it. That is how a change saved
  while the adapter was down still gets there.
* subscription data (applications, subscriptions, keys, tiers, key managers, revoked tokens)
  goes as one complete set with ``PutSubscriptionData`` *after* each commit that changes it,
  with every Sync, and on the next tick after a push that failed. Pushes are serialised and
  each reads the database when its turn comes, so the last one sent is never older than the
  last commit.

A generation counter closes the race between the two: a change committed while a Sync was
being assembled marks the adapter stale, so the next tick sends the set again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import grpc

from wsgate_common import grpc_tls
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc, subscription_pb2

log = logging.getLogger(__name__)

#: Adapter answers that mean "this API is wrong", with the REST status they become.
_REJECTIONS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
}


#: gRPC backs off up to 2 minutes between reconnects by default; a restarted adapter must be
#: found (and re-synced) within a couple of seconds.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class GatewayRejected(Exception):
    """The adapter refused the API; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GatewayUnavailable(Exception):
    """The adapter could not be reached (or did not answer in time); ``code`` is the gRPC
    status name when there was one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class AdapterClient:
    """Async client of the adapter's DeploymentService; create it inside the serving loop."""

    def __init__(
        self, address: str, timeout: float = 5.0, tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        # mTLS or plaintext, keepalives and message sizes from wsgate_common/grpc_tls.py.
        self._channel = tls.aio_channel(address, _CHANNEL_OPTIONS)
        self._stub = deploy_pb2_grpc.DeploymentServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def deploy(self, api: definition_pb2.ApiDefinition, wait: bool = False) -> None:
        """Args: wait: ride out a reconnect in progress instead of failing at once.

        Raises: GatewayRejected, GatewayUnavailable.
        """
        request = deploy_pb2.DeployRequest(api=api)
        try:
            await self._stub.Deploy(request, timeout=self.timeout, wait_for_ready=wait)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from None

    async def undeploy(
        self, api_id: str, environments: Sequence[str] = (), wait: bool = False
    ) -> None:
        """Remove an API from ``environments`` (all when empty); gone already is fine.

        Raises: GatewayRejected, GatewayUnavailable.
        """
        request = deploy_pb2.UndeployRequest(api_id=api_id, environments=list(environments))
        try:
            await self._stub.Undeploy(request, timeout=self.timeout, wait_for_ready=wait)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise self._translate(exc) from None

    async def sync(self, apis: Sequence[definition_pb2.ApiDefinition]) -> deploy_pb2.SyncResponse:
        """Raises: GatewayUnavailable (a rejected Sync is also just "not in sync yet")."""
        try:
            response: deploy_pb2.SyncResponse = await self._stub.Sync(
                deploy_pb2.SyncRequest(apis=list(apis)), timeout=self.timeout * 2
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayUnavailable(self.tls.describe(exc)) from None
        return response

    async def put_subscription_data(
        self, data: subscription_pb2.SubscriptionData, wait: bool = False
    ) -> None:
        """Replace the adapter's subscription data.

        Raises: GatewayUnavailable (also when the adapter does not implement the call yet).
        """
        try:
            await self._stub.PutSubscriptionData(data, timeout=self.timeout, wait_for_ready=wait)
        except grpc.aio.AioRpcError as exc:
            raise GatewayUnavailable(self.tls.describe(exc)) from None

    async def status(self) -> deploy_pb2.StatusResponse:
        """Raises: GatewayUnavailable."""
        try:
            response: deploy_pb2.StatusResponse = await self._stub.Status(
                deploy_pb2.StatusRequest(), timeout=min(self.timeout, 2.0)
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayUnavailable(self.tls.describe(exc), exc.code().name) from None
        return response

    def _translate(self, exc: grpc.aio.AioRpcError) -> Exception:
        status = _REJECTIONS.get(exc.code())
        if status is not None:
            return GatewayRejected(status, exc.details() or exc.code().name)
        return GatewayUnavailable(self.tls.describe(exc))


class AdapterSync:
    """Background task: ``Status`` every ``interval`` s, ``Sync`` when the adapter needs it.

    Args:
        load: reads every deployed revision from the database (runs in a worker thread).
    """

    def __init__(
        self,
        client: AdapterClient,
        load: Callable[[], list[definition_pb2.ApiDefinition]],
        interval: float = 1.0,
        load_subscriptions: Callable[[], subscription_pb2.SubscriptionData] | None = None,
    ) -> None:
        self.client = client
        self.load = load
        self.load_subscriptions = load_subscriptions
        self.interval = interval
        self._subscriptions_stale = load_subscriptions is not None
        self._subscriptions_error: str | None = None
        self._push_lock: asyncio.Lock | None = None
        #: How long the last subscription-data push took (database read + RPC), in ms.
        self.last_push_ms: float | None = None
        self.boot_id: str | None = None
        self.reachable: bool | None = None
        self._stale = True
        self._generation = 0
        self._lock = threading.Lock()
        self.synced = asyncio.Event()

    def note_change(self) -> None:
        """A deployment change was committed (called from request threads)."""
        with self._lock:
            self._generation += 1

    def mark_stale(self) -> None:
        """The adapter missed a change: send it everything on the next tick."""
        with self._lock:
            self._stale = True

    def mark_subscriptions_stale(self) -> None:
        self._subscriptions_stale = True

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """One poll; never raises (a broken adapter must not stop the loop)."""
        try:
            status = await self.client.status()
        except GatewayUnavailable as exc:
            if self.reachable is None:  # not seen since start: the usual start-up order
                waiting = exc.code or str(exc)
                log.info(
                    "adapter at %s not reachable yet (%s); retrying", self.client.address, waiting
                )
            elif self.reachable:
                log.warning("adapter at %s unreachable (%s); will retry", self.client.address, exc)
            self.reachable = False
            self.mark_stale()
            return
        if not self.reachable:
            log.info("adapter at %s reachable (boot id %s)", self.client.address, status.boot_id)
        self.reachable = True
        with self._lock:
            due = self._stale or status.boot_id != self.boot_id
        if due:
            await self.sync(status.boot_id)
            await self.push_subscriptions(wait=False)
        elif self._subscriptions_stale:
            await self.push_subscriptions(wait=False)

    async def push_subscriptions(self, wait: bool = False) -> bool:
        """Send the complete subscription data now; True when the adapter took it.

        Never raises: a failure is logged (once per kind of failure) and retried by ``tick``.
        """
        if self.load_subscriptions is None:
            return True
        if self._push_lock is None:
            self._push_lock = asyncio.Lock()
        async with self._push_lock:
            self._subscriptions_stale = False
            started = time.monotonic()
            try:
                data = await asyncio.to_thread(self.load_subscriptions)
                read = time.monotonic()
                await self.client.put_subscription_data(data, wait=wait)
            except Exception as exc:
                self._subscriptions_stale = True
                message = str(exc)
                if message != self._subscriptions_error:
                    log.warning(
                        "subscription data not pushed to adapter at %s (%s); will retry",
                        self.client.address,
                        message,
                    )
                self._subscriptions_error = message
                return False
            done = time.monotonic()
            self._subscriptions_error = None
            self.last_push_ms = (done - started) * 1000
            log.info(
                "pushed subscription data to adapter in %.1f ms (read %.1f ms, rpc %.1f ms): "
                "%d applications, %d subscriptions, %d keys, %d policies, %d revoked tokens",
                self.last_push_ms,
                (read - started) * 1000,
                (done - read) * 1000,
                len(data.applications),
                len(data.subscriptions),
                len(data.key_mappings),
                len(data.policies),
                len(data.revoked_tokens),
            )
            return True

    async def sync(self, boot_id: str) -> None:
        with self._lock:
            generation = self._generation
            self._stale = False
        started = time.monotonic()
        try:
            apis = await asyncio.to_thread(self.load)
            response = await self.client.sync(apis)
        except Exception as exc:
            self.mark_stale()
            log.warning("sync to adapter at %s failed: %s", self.client.address, exc)
            return
        took = (time.monotonic() - started) * 1000
        deployments = sum(len(api.deployments) for api in apis)
        log.info(
            "synced %d APIs (%d deployments) to adapter boot %s in %.1f ms; %d errors",
            len(apis),
            deployments,
            boot_id,
            took,
            len(response.errors),
        )
        for error in response.errors:
            log.warning("adapter could not apply a synced API: %s", error)
        with self._lock:
            if self._generation != generation:
                self._stale = True
        self.boot_id = boot_id
        self.synced.set()


class Gateway(Protocol):
    """What the service layer needs from the adapter, as blocking calls from request threads.

    Implementations raise ``GatewayRejected`` when the adapter refuses; when it cannot be
    reached they log, arrange a later sync, and return normally (the database wins).
    """

    def deploy(self, api: definition_pb2.ApiDefinition) -> None: ...

    def undeploy(self, api_id: str, environments: Sequence[str] = ()) -> None: ...

    def changed(self) -> None: ...

    def subscriptions_changed(self) -> None:
        """Subscription data was committed: push the complete set (never raises)."""
        ...


class BlockingGateway:
    """Runs the async client's calls on the serving loop for the threadpool's handlers.

    While the adapter was reachable at the last poll, a push waits out a reconnect (up to the
    timeout) rather than missing the chance to be refused; while it is known to be down, a
    push fails at once and the REST call does not hang.
    """

    def __init__(
        self, client: AdapterClient, sync: AdapterSync, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.client = client
        self.sync = sync
        self.loop = loop

    def deploy(self, api: definition_pb2.ApiDefinition) -> None:
        try:
            self._wait(self.client.deploy(api, wait=self.sync.reachable is True))
        except GatewayUnavailable as exc:
            self._missed(f"deploy of API {api.id} to {[d.name for d in api.deployments]}", exc)

    def undeploy(self, api_id: str, environments: Sequence[str] = ()) -> None:
        try:
            wait = self.sync.reachable is True
            self._wait(self.client.undeploy(api_id, environments, wait=wait))
        except GatewayUnavailable as exc:
            self._missed(f"undeploy of API {api_id} from {list(environments) or 'all'}", exc)

    def changed(self) -> None:
        self.sync.note_change()

    def subscriptions_changed(self) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.sync.push_subscriptions(wait=self.sync.reachable is True), self.loop
        )
        try:
            future.result(timeout=self.client.timeout * 2 + 1)
        except Exception as exc:  # a timeout, or the loop shutting down
            future.cancel()
            self.sync.mark_subscriptions_stale()
            log.warning("subscription data push did not finish (%r); will retry", exc)

    def _wait(self, coroutine: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            future.result(timeout=self.client.timeout * 2 + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise GatewayUnavailable("no answer in time") from None

    def _missed(self, what: str, exc: Exception) -> None:
        self.sync.mark_stale()
        log.warning(
            "adapter at %s unreachable (%s): %s is saved and will be sent by the next sync",
            self.client.address,
            exc,
            what,
        )
