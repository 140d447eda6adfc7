"""The reconciler (``AdapterSync``): retries a failing Sync with exponential backoff, knows what
the adapter runs per API, and forgets it when the adapter restarts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from control_plane.push import AdapterClient, AdapterSync, GatewayUnavailable
from wsgate_proto import definition_pb2, deploy_pb2


class ScriptedClient(AdapterClient):
    """Answers Status with ``boot_id``; Sync fails while ``failing`` (no network at all)."""

    def __init__(self) -> None:
        self.address = "scripted"
        self.timeout = 1.0
        self.boot_id = "boot-1"
        self.failing = True
        self.syncs = 0
        self.errors: list[str] = []

    async def status(self) -> deploy_pb2.StatusResponse:
        return deploy_pb2.StatusResponse(boot_id=self.boot_id)

    async def sync(self, apis: Sequence[definition_pb2.ApiDefinition]) -> deploy_pb2.SyncResponse:
        self.syncs += 1
        if self.failing:
            raise GatewayUnavailable("scripted failure")
        return deploy_pb2.SyncResponse(errors=self.errors)


def _api(api_id: str, revision: str, *labels: str) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        revision_id=revision,
        lifecycle_status="PUBLISHED",
        deployments=[definition_pb2.Deployment(name=n, vhost="localhost") for n in labels],
    )


async def test_failed_syncs_back_off_exponentially_then_converge() -> None:
    client = ScriptedClient()
    deployed = [_api("a", "r2", "Default"), _api("a", "r1", "edge"), _api("b", "r1", "Default")]
    sync = AdapterSync(client, lambda: deployed, interval=0.01, max_backoff=0.08)
    attempts_at: list[int] = []
    for tick in range(60):  # 60 ticks of >= 10 ms each
        before = client.syncs
        await sync.tick()
        if client.syncs > before:
            attempts_at.append(tick)
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    print(f"\nsync attempts at ticks {attempts_at}")
    assert len(attempts_at) < 30, "a failing adapter is not retried on every tick"
    assert gaps[0] < gaps[-1], f"the wait grows: {gaps}"
    assert sync.stale and sync.live("a") == frozenset()
    client.failing = False
    for _ in range(20):
        await sync.tick()
        if not sync.stale:
            break
        await asyncio.sleep(0.01)
    assert not sync.stale
    assert sync.live("a") == {
        ("Default", "localhost", "r2", "PUBLISHED"),
        ("edge", "localhost", "r1", "PUBLISHED"),
    }
    client.boot_id = "boot-2"  # a restarted adapter holds nothing until it is synced again
    client.failing = True
    await sync.tick()
    assert sync.live("a") == frozenset()


async def test_an_api_refused_by_sync_is_not_live_and_is_retried() -> None:
    client = ScriptedClient()
    client.failing = False
    client.errors = ["b: clashes with another API"]
    deployed = [_api("a", "r1", "Default"), _api("b", "r1", "Default")]
    sync = AdapterSync(client, lambda: deployed, interval=0.01)
    await sync.tick()
    assert sync.live("a") == {("Default", "localhost", "r1", "PUBLISHED")}
    assert sync.live("b") == frozenset()
    assert sync.stale, "the reconciler keeps trying until the adapter matches"
    client.errors = []
    for _ in range(50):
        await asyncio.sleep(0.01)
        await sync.tick()
        if not sync.stale:
            break
    assert sync.live("b") == {("Default", "localhost", "r1", "PUBLISHED")}
