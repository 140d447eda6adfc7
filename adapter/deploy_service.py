"""The control plane's gRPC door into the registry: PutApi, Deploy, Undeploy, Sync, Status and
PutSubscriptionData."""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import grpc
import grpc.aio

from adapter.compile import CompileError
from adapter.deployments import SOURCE_CONTROL_PLANE, Conflict, NotFound, Owned, Registry
from adapter.metrics import AdapterMetrics
from adapter.subscription_data import InvalidSubscriptionData
from wsgate_common import grpc_tls
from wsgate_proto import deploy_pb2, deploy_pb2_grpc, subscription_pb2

log = logging.getLogger(__name__)


class DeploymentService(deploy_pb2_grpc.DeploymentServiceServicer):
    """Every API arriving here is owned by the control plane unless it says otherwise."""

    def __init__(
        self, registry: Registry, boot_id: str, metrics: AdapterMetrics | None = None
    ) -> None:
        self.registry = registry
        self.boot_id = boot_id
        self.metrics = metrics

    def _timed(self, op: str) -> AbstractContextManager[None]:
        return self.metrics.timed(op) if self.metrics is not None else contextlib.nullcontext()

    async def Deploy(
        self, request: deploy_pb2.DeployRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.DeployResponse:
        api = request.api
        if not api.source:
            api.source = SOURCE_CONTROL_PLANE
        try:
            with self._timed("deploy"):
                versions = self.registry.deploy(api, override=True)
        except CompileError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Conflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        log.info("deployed %s (%s %s) on %s", api.id, api.name, api.version, sorted(versions))
        return deploy_pb2.DeployResponse(versions=versions)

    async def PutApi(
        self, request: deploy_pb2.PutApiRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.PutApiResponse:
        apis = list(request.apis)
        op = "validate" if request.validate_only else "put_api"
        try:
            with self._timed(op):
                versions = self.registry.put(
                    request.api_id, apis, validate_only=request.validate_only
                )
        except Conflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except Owned as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:  # CompileError included
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not request.validate_only:
            labels = sorted(d.name for api in apis for d in api.deployments)
            revisions = sorted({api.revision_id for api in apis})
            log.info(
                "put %s: revisions %s on %s (changed %s)",
                request.api_id,
                revisions,
                labels,
                sorted(versions),
            )
        return deploy_pb2.PutApiResponse(versions=versions)

    async def Undeploy(
        self, request: deploy_pb2.UndeployRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.UndeployResponse:
        try:
            with self._timed("undeploy"):
                versions = self.registry.undeploy(request.api_id, request.environments)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except CompileError as exc:  # cannot happen for a stored API, but never crash
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        log.info("undeployed %s from %s", request.api_id, sorted(versions))
        return deploy_pb2.UndeployResponse(versions=versions)

    async def Sync(
        self, request: deploy_pb2.SyncRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.SyncResponse:
        apis = list(request.apis)
        for api in apis:
            api.source = SOURCE_CONTROL_PLANE
        with self._timed("sync"):
            versions, errors = self.registry.sync(apis)
        log.info("synced %d control-plane APIs (%d refused)", len(apis) - len(errors), len(errors))
        for error in errors:
            log.warning("sync refused %s", error)
        return deploy_pb2.SyncResponse(versions=versions, errors=errors)

    async def PutSubscriptionData(
        self, request: subscription_pb2.SubscriptionData, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.PutSubscriptionDataResponse:
        try:
            with self._timed("subscription_data"):
                versions = self.registry.put_subscription_data(request)
        except InvalidSubscriptionData as exc:
            log.warning("subscription data refused: %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info(
            "subscription data: %d applications, %d subscriptions, %d key mappings, "
            "%d policies, %d key managers, %d revoked tokens",
            len(request.applications),
            len(request.subscriptions),
            len(request.key_mappings),
            len(request.policies),
            len(request.key_managers),
            len(request.revoked_tokens),
        )
        return deploy_pb2.PutSubscriptionDataResponse(versions=versions)

    async def Status(
        self, request: deploy_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.StatusResponse:
        return deploy_pb2.StatusResponse(boot_id=self.boot_id, versions=self.registry.versions())


async def start_deploy_server(
    service: DeploymentService,
    host: str,
    port: int,
    tls: grpc_tls.GrpcTls = grpc_tls.PLAINTEXT,
) -> tuple[grpc.aio.Server, int]:
    """Start the DeploymentService on ``host:port`` (mTLS or plaintext per ``tls``); returns the
    server and the bound port."""
    # Keepalives and the 64 MB message limit (a full subscription data set: 10,000
    # subscriptions ~ 1.5 MB) from wsgate_common/grpc_tls.py.
    server = grpc.aio.server(options=tls.server_options([("grpc.so_reuseport", 0)]))
    deploy_pb2_grpc.add_DeploymentServiceServicer_to_server(service, server)
    try:
        bound = tls.add_port(server, f"{host}:{port}")
    except RuntimeError as exc:  # grpc reports a taken port this way
        raise OSError(f"cannot bind deploy port {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind deploy port {host}:{port}")
    await server.start()
    return server, bound
