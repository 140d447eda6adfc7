"""Keeping the adapter in step with the database over ``wsgate.deploy.v1.DeploymentService``.

The database is the source of truth and the adapter converges to it:

* a request that changes what an API runs first asks the adapter for a dry run of the result
  (``PutApi`` with ``validate_only``; a refusal is the REST call's 400/409 and nothing is
  saved), then commits, then pushes the API's state *as read from the database after the
  commit* (``push_api``). No transaction is open during either call.
* a push that cannot reach the adapter (or is refused after all: something changed in
  between) marks the adapter stale; ``AdapterSync`` polls ``Status`` and sends the full deployed
  set with ``Sync`` whenever it is stale or restarted (new boot id), retrying with exponential
  backoff until a Sync goes through with no API refused.
* what the adapter was last seen to hold is kept per API (environment, vhost, revision), so the
  publisher API can show each deployment as live or pending.
* subscription data (applications, subscriptions, keys, tiers, key managers, revoked tokens)
  goes as one complete set with ``PutSubscriptionData`` *after* each commit that changes it,
  with every Sync, and on the next tick after a push that failed. Pushes are serialised and
  each reads the database when its turn comes, so the last one sent is never older than the
  last commit.

Pushes of one API are serialised and each reads the database inside its turn, so the adapter
never receives an older state of an API after a newer one. A Sync racing a push may carry an
older state; the generation counter (bumped by every push) then marks the adapter stale and the
next tick syncs again.
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


#: Where one revision of an API runs, in which lifecycle state:
#: (environment, vhost, revision id, lifecycle status).
Placement = tuple[str, str, str, str]


def placements(apis: Sequence[definition_pb2.ApiDefinition]) -> frozenset[Placement]:
    """Every (environment, vhost, revision id, lifecycle status) the definitions describe."""
    return frozenset(
        (d.name, d.vhost, api.revision_id, api.lifecycle_status)
        for api in apis
        for d in api.deployments
    )


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

    async def put_api(
        self,
        api_id: str,
        apis: Sequence[definition_pb2.ApiDefinition],
        validate_only: bool = False,
        wait: bool = False,
    ) -> None:
        """Make ``apis`` all the adapter serves of API ``api_id`` (or only check it can).

        Raises: GatewayRejected, GatewayUnavailable.
        """
        request = deploy_pb2.PutApiRequest(
            api_id=api_id, apis=list(apis), validate_only=validate_only
        )
        try:
            await self._stub.PutApi(request, timeout=self.timeout, wait_for_ready=wait)
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
    """Background reconciler: ``Status`` every ``interval`` s, ``Sync`` when the adapter needs
    it, retried with exponential backoff (up to ``max_backoff`` s) while it fails.

    Args:
        load: reads every deployed revision from the database (runs in a worker thread).
        load_api: reads the deployed revisions of one API (``push_api``).
    """

    def __init__(
        self,
        client: AdapterClient,
        load: Callable[[], list[definition_pb2.ApiDefinition]],
        interval: float = 1.0,
        load_subscriptions: Callable[[], subscription_pb2.SubscriptionData] | None = None,
        load_api: Callable[[str], list[definition_pb2.ApiDefinition]] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.client = client
        self.load = load
        self.load_api = load_api
        self.load_subscriptions = load_subscriptions
        self.interval = interval
        self.max_backoff = max_backoff
        self._subscriptions_stale = load_subscriptions is not None
        self._subscriptions_error: str | None = None
        self._push_lock: asyncio.Lock | None = None
        self._deploy_locks: dict[str, asyncio.Lock] = {}
        #: How long the last subscription-data push took (database read + RPC), in ms.
        self.last_push_ms: float | None = None
        #: The adapter boot last synced, and the one Status last showed.
        self.boot_id: str | None = None
        self._seen_boot_id: str | None = None
        self.reachable: bool | None = None
        self._stale = True
        self._generation = 0
        self._lock = threading.Lock()
        #: API id -> where the adapter (boot ``boot_id``) was last seen to run it.
        self._live: dict[str, frozenset[Placement]] = {}
        self._failures = 0
        self._retry_at = 0.0
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

    @property
    def stale(self) -> bool:
        with self._lock:
            return self._stale

    def live(self, api_id: str) -> frozenset[Placement]:
        """Where the adapter was last seen running ``api_id`` (safe from any thread)."""
        with self._lock:
            return self._live.get(api_id, frozenset())

    def _deploy_guard(self, api_id: str = "") -> asyncio.Lock:
        """The lock serialising pushes of one API (``""``: the full Sync)."""
        lock = self._deploy_locks.get(api_id)
        if lock is None:
            lock = self._deploy_locks[api_id] = asyncio.Lock()
        return lock

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
            if status.boot_id != self._seen_boot_id:  # a new adapter holds nothing of ours
                self._seen_boot_id = status.boot_id
                self._live.clear()
                self._failures = 0
                self._retry_at = 0.0
            due = self._stale or status.boot_id != self.boot_id
        if due and time.monotonic() >= self._retry_at:
            await self.sync(status.boot_id)
            await self.push_subscriptions(wait=False)
        elif self._subscriptions_stale:
            await self.push_subscriptions(wait=False)

    async def push_api(self, api_id: str, wait: bool = False) -> bool:
        """Send the adapter what the database now says API ``api_id`` runs; True when taken.

        Never raises: a failure marks the adapter stale, and the reconciler's Sync sends it.
        """
        if self.load_api is None:
            self.mark_stale()
            return False
        async with self._deploy_guard(api_id):
            try:
                apis = await asyncio.to_thread(self.load_api, api_id)
                await self.client.put_api(api_id, apis, wait=wait)
            except GatewayRejected as exc:
                self.mark_stale()
                log.warning(
                    "adapter at %s refused API %s after it was saved (%s); it stays pending "
                    "and will be retried",
                    self.client.address,
                    api_id,
                    exc.message,
                )
                return False
            except Exception as exc:
                self.mark_stale()
                log.warning(
                    "adapter at %s unreachable (%s): API %s is saved and will be sent by the "
                    "next sync",
                    self.client.address,
                    exc,
                    api_id,
                )
                return False
            with self._lock:
                self._live[api_id] = placements(apis)
            return True

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
        """Send the full deployed set; on failure (or an API refused) retry with backoff."""
        async with self._deploy_guard():
            with self._lock:
                generation = self._generation
                self._stale = False
            started = time.monotonic()
            try:
                apis = await asyncio.to_thread(self.load)
                response = await self.client.sync(apis)
            except Exception as exc:
                self.mark_stale()
                self._back_off()
                log.warning(
                    "sync to adapter at %s failed: %s; retrying in %.1f s",
                    self.client.address,
                    exc,
                    self._retry_at - time.monotonic(),
                )
                return
            took = (time.monotonic() - started) * 1000
            refused = {error.split(":", 1)[0] for error in response.errors}
            live: dict[str, set[Placement]] = {}
            for api in apis:
                if api.id not in refused:
                    live.setdefault(api.id, set()).update(placements([api]))
            with self._lock:
                self._live = {api_id: frozenset(where) for api_id, where in live.items()}
                if self._generation != generation or refused:
                    self._stale = True
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
            if refused:
                self._back_off()
            else:
                self._failures = 0
                self._retry_at = 0.0
            self.boot_id = boot_id
            self.synced.set()

    def _back_off(self) -> None:
        self._failures += 1
        delay = min(self.interval * 2 ** min(self._failures, 16), self.max_backoff)
        self._retry_at = time.monotonic() + delay


class Gateway(Protocol):
    """What the service layer needs from the adapter, as blocking calls from request threads.

    A change is ``validate``-d before it is saved and ``push``-ed after the commit; no
    transaction may be open during either.
    """

    def validate(self, api_id: str, apis: Sequence[definition_pb2.ApiDefinition]) -> None:
        """Dry run: would the adapter take ``apis`` as all of API ``api_id``?

        Raises ``GatewayRejected`` when it would not; an unreachable adapter is logged and
        the change goes ahead (the database wins; the reconciler delivers it later).
        """
        ...

    def push(self, api_id: str) -> None:
        """Send API ``api_id`` as the database now has it (never raises; a miss is retried)."""
        ...

    def live(self, api_id: str) -> frozenset[Placement]:
        """(environment, vhost, revision id, lifecycle status) the adapter is known to run."""
        ...

    def subscriptions_changed(self) -> None:
        """Subscription data was committed: push the complete set (never raises)."""
        ...


class BlockingGateway:
    """Runs the async client's calls on the serving loop for the threadpool's handlers.

    While the adapter was reachable at the last poll, a call waits out a reconnect (up to the
    timeout) rather than missing the chance to be refused; while it is known to be down, a
    call fails at once and the REST call does not hang.
    """

    def __init__(
        self, client: AdapterClient, sync: AdapterSync, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.client = client
        self.sync = sync
        self.loop = loop

    def validate(self, api_id: str, apis: Sequence[definition_pb2.ApiDefinition]) -> None:
        wait = self.sync.reachable is True
        try:
            self._wait(self.client.put_api(api_id, apis, validate_only=True, wait=wait))
        except GatewayUnavailable as exc:
            log.warning(
                "adapter at %s unreachable (%s): API %s is saved unchecked and stays pending "
                "until the adapter takes it",
                self.client.address,
                exc,
                api_id,
            )

    def push(self, api_id: str) -> None:
        self.sync.note_change()
        future = asyncio.run_coroutine_threadsafe(
            self.sync.push_api(api_id, wait=self.sync.reachable is True), self.loop
        )
        try:
            future.result(timeout=self.client.timeout * 2 + 1)
        except Exception as exc:  # a timeout, or the loop shutting down
            future.cancel()
            self.sync.mark_stale()
            log.warning("push of API %s did not finish (%r); will retry", api_id, exc)

    def live(self, api_id: str) -> frozenset[Placement]:
        return self.sync.live(api_id)

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
