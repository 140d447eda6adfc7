"""The control plane's Prometheus metrics, served at ``/metrics`` (no authentication).

* HTTP requests by route template (``/api/am/publisher/v4/apis/{apiId}``, never the raw path,
  so ids do not explode the label set), method and status, with a latency histogram;
* pushes to the adapter by operation (deploy, undeploy, sync, subscription_data) and result
  (ok, rejected, unavailable), with a latency histogram; a ``sync`` push is one sync run.

Each app gets its own registry (several apps live in one test process).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from control_plane.push import AdapterClient, GatewayRejected
from wsgate_common.metrics import CONTENT_TYPE, render
from wsgate_proto import definition_pb2, deploy_pb2, subscription_pb2

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
T = TypeVar("T")


class ControlPlaneMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "wsgate_cp_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "wsgate_cp_http_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.pushes = Counter(
            "wsgate_cp_adapter_pushes",
            "Calls to the adapter's DeploymentService by operation and result",
            ["op", "result"],
            registry=r,
        )
        self.push_seconds = Histogram(
            "wsgate_cp_adapter_push_seconds",
            "Latency of calls to the adapter's DeploymentService by operation",
            ["op"],
            buckets=BUCKETS,
            registry=r,
        )
        self.sync_runs = Counter(
            "wsgate_cp_adapter_sync_runs",
            "Full re-syncs of the deployed set to the adapter, by result",
            ["result"],
            registry=r,
        )

    async def observe_push(self, op: str, call: Awaitable[T]) -> T:
        """Await ``call``, recording its latency and result (ok / rejected / unavailable)."""
        started = time.perf_counter()
        result = "unavailable"
        try:
            value = await call
            result = "ok"
            return value
        except GatewayRejected:
            result = "rejected"
            raise
        finally:
            self.push_seconds.labels(op).observe(time.perf_counter() - started)
            self.pushes.labels(op, result).inc()
            if op == "sync":
                self.sync_runs.labels(result).inc()


_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's template with its prefix: ``/api/am/publisher/v4/apis/{apiId}``.

    FastAPI may hand over a route whose path lacks the prefix it was included under; the
    prefix is then what precedes the route's rendered path in the request path.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    params = scope.get("path_params") or {}
    rendered = _PARAM.sub(lambda m: str(params.get(m.group(1), "")), template)
    path = str(scope.get("path", ""))
    if rendered and path.endswith(rendered):
        return path[: len(path) - len(rendered)] + template
    return template


def install(app: FastAPI) -> ControlPlaneMetrics:
    """Count every request and serve ``/metrics``; the metrics object lands in app.state."""
    metrics = ControlPlaneMetrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            template = route_template(request.scope)
            metrics.requests.labels(template, request.method, str(status)).inc()
            metrics.request_seconds.labels(template).observe(time.perf_counter() - started)

    @app.get("/metrics", tags=["Health"], response_class=Response)
    def metrics_endpoint() -> Response:
        """Prometheus text exposition."""
        return Response(render(metrics.registry), media_type=CONTENT_TYPE)

    return metrics


class MeteredAdapterClient(AdapterClient):
    """An :class:`AdapterClient` whose pushes are counted and timed in ``metrics``."""

    def __init__(self, *args: Any, metrics: ControlPlaneMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def deploy(self, api: definition_pb2.ApiDefinition, wait: bool = False) -> None:
        await self.metrics.observe_push("deploy", super().deploy(api, wait))

    async def put_api(
        self,
        api_id: str,
        apis: Sequence[definition_pb2.ApiDefinition],
        validate_only: bool = False,
        wait: bool = False,
    ) -> None:
        op = "validate" if validate_only else "put_api"
        await self.metrics.observe_push(op, super().put_api(api_id, apis, validate_only, wait))

    async def undeploy(
        self, api_id: str, environments: Sequence[str] = (), wait: bool = False
    ) -> None:
        await self.metrics.observe_push("undeploy", super().undeploy(api_id, environments, wait))

    async def sync(self, apis: Sequence[definition_pb2.ApiDefinition]) -> deploy_pb2.SyncResponse:
        return await self.metrics.observe_push("sync", super().sync(apis))

    async def put_subscription_data(
        self, data: subscription_pb2.SubscriptionData, wait: bool = False
    ) -> None:
        await self.metrics.observe_push(
            "subscription_data", super().put_subscription_data(data, wait)
        )
