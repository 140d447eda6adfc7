"""The router's decision cache with real processes: a reconnect with the same token is allowed
without an enforcer Check (counted in /metrics, ``cache=hit`` in the handshake log line), and a
cached allow is forgotten as soon as the token is revoked or the subscription blocked: the next
handshake is refused, long before the cache's time bound (set to 300 s here). With the setting
at 0 every handshake is checked by the enforcer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.apim_flow import (
    Apim,
    apim,
    denial,
    expect,
    wait_status,
    ws_api_body,
)
from tests.integration.conftest import Stack, start_stack, try_handshake
from tests.procs import PROMPT, eventually

LOG_DELAY = 0.5  # > the components' log batching interval (wsgate_common/logs.py)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("cache-on")
    with start_stack(base, {"WSGATE_ROUTER_DECISION_CACHE_TTL": "300"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def am(cached: Stack) -> Iterator[Apim]:
    with apim(cached) as session:
        yield session


def cache_lookups(stack: Stack) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{stack.ports.router}/metrics", timeout=10).text
    found = re.findall(
        r'^wsgate_router_decision_cache_lookups_total\{result="(\w+)"\} (\S+)$', text, re.M
    )
    return {result: float(value) for result, value in found}


def enforcer_checks(stack: Stack, token_free_marker: str = "allowed PRODUCTION") -> int:
    return stack.procs["enforcer"].log().count(token_free_marker)


def _api(am: Apim, stack: Stack, name: str) -> tuple[str, str]:
    context = "/" + name.lower()
    api_id = am.live_api(ws_api_body(name, context, stack.ports.echo))
    return api_id, f"{stack.ws}{context}/1.0.0/notifications"


async def _reconnect_hits(stack: Stack, url: str, token: str) -> None:
    """A first allow (cached), then a reconnect served from the cache without a Check."""
    await wait_status(url, token, 101, limit=PROMPT)
    before, checks = cache_lookups(stack), enforcer_checks(stack)
    result = await try_handshake(url, token)
    assert result.status == 101 and result.echoed == "hello", result
    after = cache_lookups(stack)
    assert after.get("hit", 0) == before.get("hit", 0) + 1, (before, after)
    await eventually(lambda: "cache=hit" in stack.procs["router"].log(), what="cache=hit logged")
    await asyncio.sleep(LOG_DELAY)  # the enforcer's log line, had it been asked, is out by now
    assert enforcer_checks(stack) == checks, "the enforcer was asked despite the cached allow"


async def test_revoking_the_token_forgets_its_cached_allow(cached: Stack, am: Apim) -> None:
    api_id, url = _api(am, cached, "CacheRevoke")
    _, _, keys = am.subscribed_app("CacheRevokeApp", [api_id])
    token = am.token(keys)
    await _reconnect_hits(cached, url, token)
    revoked = am.revoke(keys, token)
    assert revoked.status_code == 200, revoked.text
    took, result = await wait_status(url, token, 401, limit=PROMPT)
    denial(result, 401, 900901)
    print(f"\nrevoked -> next handshake refused in {took * 1000:.0f} ms (cache ttl 300 s)")


async def test_blocking_the_subscription_forgets_its_cached_allow(cached: Stack, am: Apim) -> None:
    api_id, url = _api(am, cached, "CacheBlock")
    _, (sub,), keys = am.subscribed_app("CacheBlockApp", [api_id])
    token = am.token(keys)
    await _reconnect_hits(cached, url, token)
    blocked = am.block_subscription(sub, "BLOCKED")
    assert blocked.status_code == 200, blocked.text
    took, result = await wait_status(url, token, 403, limit=PROMPT)
    denial(result, 403, 900907)
    print(f"\nblocked -> next handshake refused in {took * 1000:.0f} ms (cache ttl 300 s)")
    # denials are never cached: unblocking lets the token straight back in
    assert am.unblock_subscription(sub).status_code == 200
    await wait_status(url, token, 101, limit=PROMPT)


async def test_a_zero_ttl_turns_the_cache_off(tmp_path: Path) -> None:
    with (
        start_stack(tmp_path, {"WSGATE_ROUTER_DECISION_CACHE_TTL": "0"}) as stack,
        apim(stack) as session,
    ):
        api_id, url = _api(session, stack, "CacheOff")
        _, _, keys = session.subscribed_app("CacheOffApp", [api_id])
        token = session.token(keys)
        await wait_status(url, token, 101, limit=PROMPT)
        checks = enforcer_checks(stack)
        for _ in range(3):
            result = await try_handshake(url, token)
            assert result.status == 101, result
        await eventually(lambda: enforcer_checks(stack) == checks + 3, what="3 Checks logged")
        assert cache_lookups(stack) == {"hit": 0.0, "miss": 0.0}
        await eventually(lambda: "cache=off" in stack.procs["router"].log(), what="cache=off")
        assert "cache=hit" not in stack.procs["router"].log()


# -- handshake plans ---------------------------------------------------------------------------


def metric(stack: Stack, pattern: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.ports.router}/metrics", timeout=10).text
    found = re.search("^" + re.escape(pattern) + r" (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def planned(stack: Stack) -> float:
    return metric(stack, 'wsgate_router_core_handshakes_total{outcome="planned"}')


async def plain(url: str, token: str) -> int:
    """A handshake without compression (the same head every time but its key) and an echo."""
    try:
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None
        ) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "hi"
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


async def _planned_hits(stack: Stack, url: str, token: str) -> None:
    """The first plain handshake is decided by Python (from the cache), the next by its plan:
    no Check, the hits counted and logged as such."""
    await wait_status(url, token, 101, limit=PROMPT)
    assert await plain(url, token) == 101
    before, hits, checks = planned(stack), cache_lookups(stack), enforcer_checks(stack)
    for _ in range(3):
        assert await plain(url, token) == 101
    assert planned(stack) == before + 3
    assert cache_lookups(stack)["hit"] == hits["hit"] + 3
    await asyncio.sleep(LOG_DELAY)
    assert enforcer_checks(stack) == checks, "the enforcer was asked despite the plan"
    assert stack.procs["router"].log().count("cache=hit") >= 4


async def _refused_by_python(stack: Stack, url: str, token: str, status: int) -> None:
    """Poll plain handshakes until one is refused with ``status``; from then on every one is,
    and none is planned (the plan went with the cached allow)."""
    deadline = asyncio.get_running_loop().time() + PROMPT
    while (got := await plain(url, token)) != status:
        assert got == 101, got
        assert asyncio.get_running_loop().time() < deadline, f"no {status} in time"
        await asyncio.sleep(0.01)
    count = planned(stack)
    for _ in range(3):
        assert await plain(url, token) == status
    assert planned(stack) == count


async def test_a_plan_serves_repeats_and_goes_with_a_revoked_token(cached: Stack, am: Apim) -> None:
    api_id, url = _api(am, cached, "PlanRevoke")
    _, _, keys = am.subscribed_app("PlanRevokeApp", [api_id])
    token = am.token(keys)
    await _planned_hits(cached, url, token)
    assert am.revoke(keys, token).status_code == 200
    await _refused_by_python(cached, url, token, 401)


async def test_a_plan_goes_with_a_blocked_subscription(cached: Stack, am: Apim) -> None:
    api_id, url = _api(am, cached, "PlanBlock")
    _, (sub,), keys = am.subscribed_app("PlanBlockApp", [api_id])
    token = am.token(keys)
    await _planned_hits(cached, url, token)
    assert am.block_subscription(sub, "BLOCKED").status_code == 200
    await _refused_by_python(cached, url, token, 403)


async def test_an_undeployed_api_is_refused_by_python(cached: Stack, am: Apim) -> None:
    context = "/planundeploy"
    api_id = am.create_api(ws_api_body("PlanUndeploy", context, cached.ports.echo))
    am.publish(api_id)
    revision = am.revision(api_id)
    expect(am.deploy_revision(api_id, revision), 200, 201)
    url = f"{cached.ws}{context}/1.0.0/notifications"
    _, _, keys = am.subscribed_app("PlanUndeployApp", [api_id])
    token = am.token(keys)
    await _planned_hits(cached, url, token)
    expect(am.undeploy_revision(api_id, revision), 200, 201)
    await _refused_by_python(cached, url, token, 404)
    # deployed again: the first handshake is Python's (no plan survived the routes), then planned
    expect(am.deploy_revision(api_id, revision), 200, 201)
    deadline = asyncio.get_running_loop().time() + PROMPT
    count = planned(cached)
    while await plain(url, token) != 101:
        assert asyncio.get_running_loop().time() < deadline, "not served again in time"
        await asyncio.sleep(0.01)
    assert planned(cached) == count
    assert await plain(url, token) == 101
    assert planned(cached) == count + 1
