"""Live rules survive an enforcer restart.

While the enforcer is down, a subscription is deleted and an API undeployed on the control plane
(which pushes both to the adapter). The enforcer that comes back never saw the state before, so
it has no change to turn into a rule; the router reconciles its live connections with it when its
rules stream reopens, and the two affected connections close with 1008 and a reason, while a
bystander on the same API keeps echoing. The time from the restarted enforcer's readiness to the
close is printed; this module has its own stack (module scope) because it stops the enforcer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.integration.apim_flow import (
    DEVPORTAL,
    Apim,
    Closed,
    apim,
    denial,
    expect,
    open_ws,
    still_echoes,
    wait_status,
    watch_close,
    ws_api_body,
)
from tests.integration.conftest import Stack, try_handshake
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

# The close is expected within about a second of the enforcer's return; the assertion leaves
# room for a loaded machine (PROMPT; the real figure is printed).
CLOSE_LIMIT = PROMPT


@dataclass
class Setup:
    sub_url: str  # API with a subscription that will be deleted
    gone_url: str  # API that will be undeployed
    gone_id: str
    gone_revision: str
    victim_subscription: str
    victim_token: str
    bystander_token: str


@pytest.fixture(scope="module")
def am(stack: Stack) -> Iterator[Apim]:
    with apim(stack) as session:
        yield session


@pytest.fixture(scope="module")
def setup(stack: Stack, am: Apim) -> Setup:
    sub_api = am.live_api(ws_api_body("ReconSub", "/reconsub", stack.ports.echo))
    gone_api = am.create_api(ws_api_body("ReconGone", "/recongone", stack.ports.echo))
    am.publish(gone_api)
    revision = am.revision(gone_api)
    expect(am.deploy_revision(gone_api, revision), 200, 201)
    _, (victim_sub, _), victim_keys = am.subscribed_app("ReconVictim", [sub_api, gone_api])
    _, _, bystander_keys = am.subscribed_app("ReconBystander", [sub_api])
    return Setup(
        sub_url=f"{stack.ws}/reconsub/1.0.0/notifications",
        gone_url=f"{stack.ws}/recongone/1.0.0/notifications",
        gone_id=gone_api,
        gone_revision=revision,
        victim_subscription=victim_sub,
        victim_token=am.token(victim_keys),
        bystander_token=am.token(bystander_keys),
    )


async def _first_ready(url: str) -> float:
    """Poll ``url`` every 10 ms; the monotonic time of its first 200."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.01)


async def _closed_by(ws: ClientConnection, what: str) -> Closed:
    closed = await watch_close(ws)
    print(f"\n{what}: close {closed.code} {closed.reason!r}")
    return closed


async def test_changes_made_while_the_enforcer_was_down_close_connections(
    stack: Stack, am: Apim, setup: Setup
) -> None:
    await wait_status(setup.sub_url, setup.victim_token, 101)
    await wait_status(setup.gone_url, setup.victim_token, 101)
    await wait_status(setup.sub_url, setup.bystander_token, 101)
    ready_url = f"http://127.0.0.1:{stack.ports.enforcer_http}/ready"
    async with (
        open_ws(setup.sub_url, setup.victim_token) as unsubscribed,
        open_ws(setup.gone_url, setup.victim_token) as undeployed,
        open_ws(setup.sub_url, setup.bystander_token) as bystander,
    ):
        await asyncio.to_thread(stack.stop, "enforcer")
        deleted = await asyncio.to_thread(
            am.http.delete, f"{DEVPORTAL}/subscriptions/{setup.victim_subscription}"
        )
        assert deleted.status_code in (200, 204), deleted.text
        gone = await asyncio.to_thread(am.undeploy_revision, setup.gone_id, setup.gone_revision)
        assert gone.status_code in (200, 201), gone.text
        # Nothing closes them while the enforcer is away (and the data plane still relays).
        await still_echoes(unsubscribed)
        await still_echoes(undeployed)

        watchers = [
            asyncio.create_task(_closed_by(unsubscribed, "subscription deleted")),
            asyncio.create_task(_closed_by(undeployed, "API undeployed")),
        ]
        ready = asyncio.create_task(_first_ready(ready_url))
        started = time.monotonic()
        await asyncio.to_thread(stack.start, "enforcer")
        ready_at = await asyncio.wait_for(ready, 10)
        try:
            done = await asyncio.wait_for(asyncio.gather(*watchers), CLOSE_LIMIT + 10)
        except TimeoutError:
            raise AssertionError(
                "a connection was still open well after the enforcer returned"
            ) from None
        for closed, what in zip(done, ("subscription deleted", "API undeployed"), strict=True):
            print(
                f"{what}: closed {(closed.at - ready_at) * 1000:.0f} ms after the enforcer's "
                f"/ready (start -> ready {(ready_at - started) * 1000:.0f} ms)"
            )
        sub_closed, api_closed = done
        assert (sub_closed.code, sub_closed.reason) == (1008, "subscription removed")
        assert (api_closed.code, api_closed.reason) == (1008, "API undeployed")
        for closed in done:
            assert closed.at - ready_at < CLOSE_LIMIT, closed
        await still_echoes(bystander)

    denial(await try_handshake(setup.sub_url, setup.victim_token), 403, 900908)
    assert (await try_handshake(setup.gone_url, setup.victim_token)).status == 404
