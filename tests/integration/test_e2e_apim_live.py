"""Changes made in the API Manager reach connections that are already open.

Each test opens two echoing connections through the router, makes one change on the control
plane's REST API, and checks that the affected connection is closed with 1008 and a reason
within one second of the REST answer while the other one stays open and still echoes. The
propagation time (REST answer -> close seen by the client) is printed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.apim_flow import (
    DEVPORTAL,
    PUBLISHER,
    SCOPE,
    Apim,
    Closed,
    apim,
    denial,
    open_ws,
    still_echoes,
    wait_status,
    watch_close,
    ws_api_body,
)
from tests.integration.conftest import Stack, try_handshake
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

Trigger = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@pytest.fixture(scope="module")
def am(stack: Stack) -> Iterator[Apim]:
    with apim(stack) as session:
        yield session


async def _close_on_change(
    stack: Stack,
    victim: tuple[str, str],
    bystander: tuple[str, str],
    trigger: Trigger,
    what: str,
) -> Closed:
    """Open both (url, token) connections, fire ``trigger``, return how the victim closed."""
    async with (
        httpx.AsyncClient(
            base_url=stack.cp_url, auth=("admin", "admin"), verify=False, timeout=30
        ) as cp,
        open_ws(*victim) as doomed,
        open_ws(*bystander) as other,
    ):
        watcher = asyncio.create_task(watch_close(doomed))
        sent = time.monotonic()
        answer = await trigger(cp)
        answered = time.monotonic()
        assert answer.status_code == 200, f"{what}: {answer.status_code} {answer.text[:500]}"
        try:
            closed = await asyncio.wait_for(watcher, 3.0)
        except TimeoutError:
            raise AssertionError(f"{what}: the connection was still open 3 s later") from None
        await asyncio.sleep(0.2)  # a late, too-broad rule would hit the bystander by now
        await still_echoes(other)
    took = closed.at - answered
    print(
        f"\n{what}: REST answer -> close {closed.code} {closed.reason!r} seen: "
        f"{took * 1000:.0f} ms (request sent -> close: {(closed.at - sent) * 1000:.0f} ms)"
    )
    assert closed.code == 1008, closed
    assert closed.reason, closed
    assert took < PROMPT, f"{what}: close seen {took:.2f} s after the REST answer"
    return closed


def _live_api(am: Apim, stack: Stack, name: str) -> tuple[str, str]:
    """A deployed API: (id, the URL of its scoped topic)."""
    context = "/" + name.lower()
    api_id = am.live_api(ws_api_body(name, context, stack.ports.echo))
    return api_id, f"{stack.ws}{context}/1.0.0/notifications"


async def test_blocking_the_subscription_closes_its_connection_only(stack: Stack, am: Apim) -> None:
    api_id, url = _live_api(am, stack, "LiveSub")
    _, (blocked_sub,), blocked_keys = am.subscribed_app("LiveSubBlocked", [api_id])
    _, _, other_keys = am.subscribed_app("LiveSubOther", [api_id])
    victim, other = am.token(blocked_keys), am.token(other_keys)
    await wait_status(url, victim, 101)
    await wait_status(url, other, 101)

    async def block(cp: httpx.AsyncClient) -> httpx.Response:
        return await cp.post(
            f"{PUBLISHER}/subscriptions/block-subscription",
            params={"subscriptionId": blocked_sub, "blockState": "BLOCKED"},
        )

    await _close_on_change(stack, (url, victim), (url, other), block, "block-subscription")
    denial(await try_handshake(url, victim), 403, 900907)


async def test_revoking_the_token_closes_its_connection_only(stack: Stack, am: Apim) -> None:
    api_id, url = _live_api(am, stack, "LiveRevoke")
    _, _, keys = am.subscribed_app("LiveRevokeApp", [api_id])
    victim, other = am.token(keys), am.token(keys)
    assert victim != other, "two token requests gave the same token: cannot revoke just one"
    await wait_status(url, victim, 101)

    async def revoke(cp: httpx.AsyncClient) -> httpx.Response:
        return await cp.post(
            "/oauth2/revoke",
            data={"token": victim},
            auth=(keys.consumer_key, keys.consumer_secret),
        )

    await _close_on_change(stack, (url, victim), (url, other), revoke, "POST /oauth2/revoke")
    denial(await try_handshake(url, victim), 401, 900901)


async def test_blocking_the_api_closes_its_connections_only(stack: Stack, am: Apim) -> None:
    blocked_id, blocked_url = _live_api(am, stack, "LiveBlockApi")
    other_id, other_url = _live_api(am, stack, "LiveOpenApi")
    _, _, keys = am.subscribed_app("LiveBlockApiApp", [blocked_id, other_id])
    token = am.token(keys)
    await wait_status(blocked_url, token, 101)
    await wait_status(other_url, token, 101)

    async def block(cp: httpx.AsyncClient) -> httpx.Response:
        return await cp.post(
            f"{PUBLISHER}/apis/change-lifecycle", params={"apiId": blocked_id, "action": "Block"}
        )

    await _close_on_change(
        stack, (blocked_url, token), (other_url, token), block, "change-lifecycle Block"
    )
    refused = await try_handshake(blocked_url, token)
    assert refused.status in (403, 503), refused
    print(f"new handshake on the blocked API: {refused.status} {refused.body!r}")
    republished = am.lifecycle(blocked_id, "Re-Publish")
    assert republished.status_code == 200, republished.text
    await wait_status(blocked_url, token, 101, limit=PROMPT)


async def test_an_expiring_token_closes_its_connection_at_expiry(stack: Stack, am: Apim) -> None:
    api_id, url = _live_api(am, stack, "LiveExpiry")
    _, _, keys = am.subscribed_app("LiveExpiryApp", [api_id])
    other = am.token(keys)
    await wait_status(url, other, 101)  # live, before the short token's clock starts
    short = am.generate_token(keys, validity=3, scopes=[SCOPE])
    token = short["accessToken"]
    assert SCOPE in short.get("tokenScopes", [SCOPE]), short
    expires_at = int(jwt.decode(token, options={"verify_signature": False})["exp"])
    issued_at = time.time()
    assert 1 <= expires_at - issued_at <= 5, (expires_at, issued_at, short)
    async with open_ws(url, token) as doomed, open_ws(url, other) as bystander:
        try:
            closed = await asyncio.wait_for(watch_close(doomed), expires_at - time.time() + 3)
        except TimeoutError:
            raise AssertionError("still open 3 s after the token expired") from None
        await still_echoes(bystander)
    late = closed.wall - expires_at
    print(
        f"\ntoken expiry: close {closed.code} {closed.reason!r} seen "
        f"{late * 1000:+.0f} ms from the token's exp"
    )
    assert closed.code == 1008, closed
    assert closed.reason, closed
    assert -0.5 <= late <= PROMPT, f"closed {late:+.2f} s from exp"
    await _expired_token_gets_nothing_through(url, token)


async def _expired_token_gets_nothing_through(url: str, token: str) -> None:
    """After exp: 401 900901, or (while the enforcer's clock-skew leeway still accepts it) an
    upgrade that the router closes at once with 1008, before any message is relayed."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with connect(url, additional_headers=headers, open_timeout=5) as ws:
            closed = await asyncio.wait_for(watch_close(ws), 2)
            print(f"new handshake after exp: upgraded, then closed {closed.code} {closed.reason!r}")
            assert closed.code == 1008 and "expired" in closed.reason, closed
    except InvalidStatus as exc:
        assert exc.response.status_code == 401, exc.response
        body = json.loads(exc.response.body or b"{}")
        assert body.get("code") == 900901, body


async def test_unblocking_lets_the_application_back_in(stack: Stack, am: Apim) -> None:
    api_id, url = _live_api(am, stack, "LiveUnblock")
    _, (sub,), keys = am.subscribed_app("LiveUnblockApp", [api_id])
    token = am.token(keys)
    await wait_status(url, token, 101)
    blocked = am.block_subscription(sub, "BLOCKED")
    assert blocked.status_code == 200, blocked.text
    await wait_status(url, token, 403, limit=PROMPT)
    unblocked = am.unblock_subscription(sub)
    assert unblocked.status_code == 200, unblocked.text
    took, _ = await wait_status(url, token, 101, limit=PROMPT)
    state = am.http.get(f"{DEVPORTAL}/subscriptions/{sub}").json()
    assert state["status"] == "UNBLOCKED", state
    print(f"\nunblock-subscription answered -> allowed again: {took * 1000:.0f} ms")
