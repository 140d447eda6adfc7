"""The control plane's /metrics: requests by route template, pushes and sync runs."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from control_plane.metrics import ControlPlaneMetrics
from control_plane.push import GatewayRejected, GatewayUnavailable
from tests.unit.control_plane.helpers import FakeAdapter
from wsgate_common.metrics import parse_samples, render


def _samples(client: TestClient) -> dict[str, float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return parse_samples(answer.text)


def test_requests_are_counted_by_route_template_not_raw_path(client: TestClient) -> None:
    client.get("/health")
    client.get("/health")
    client.get("/api/am/publisher/v4/apis/no-such-id")
    samples = _samples(client)
    assert samples['wsgate_cp_http_requests_total{method="GET",route="/health",status="200"}'] == 2
    missing = (
        'wsgate_cp_http_requests_total{method="GET",'
        'route="/api/am/publisher/v4/apis/{apiId}",status="404"}'
    )
    assert samples.get(missing) == 1, [n for n in samples if "http_requests_total" in n]
    assert not any("no-such-id" in name for name in samples)


def test_sync_runs_against_an_adapter_are_counted(
    adapter_client: tuple[TestClient, FakeAdapter],
) -> None:
    client, _ = adapter_client
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = _samples(client)
        if samples.get('wsgate_cp_adapter_sync_runs_total{result="ok"}', 0) >= 1:
            break
        time.sleep(0.05)
    assert samples['wsgate_cp_adapter_pushes_total{op="sync",result="ok"}'] >= 1
    assert samples['wsgate_cp_adapter_push_seconds_count{op="sync"}'] >= 1


async def test_push_results_are_told_apart() -> None:
    metrics = ControlPlaneMetrics()

    async def ok() -> int:
        return 7

    async def rejected() -> None:
        raise GatewayRejected(400, "bad")

    async def down() -> None:
        raise GatewayUnavailable("UNAVAILABLE")

    assert await metrics.observe_push("deploy", ok()) == 7
    with pytest.raises(GatewayRejected):
        await metrics.observe_push("deploy", rejected())
    with pytest.raises(GatewayUnavailable):
        await metrics.observe_push("sync", down())
    text = parse_samples(render(metrics.registry).decode())
    assert text['wsgate_cp_adapter_pushes_total{op="deploy",result="ok"}'] == 1
    assert text['wsgate_cp_adapter_pushes_total{op="deploy",result="rejected"}'] == 1
    assert text['wsgate_cp_adapter_sync_runs_total{result="unavailable"}'] == 1
