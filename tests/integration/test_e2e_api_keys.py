"""API keys end to end on real processes: an API published through the control plane with
``securityScheme: ["api_key"]``, a key minted in the developer portal, used through the
router with ``?apikey=`` and the ``apikey`` header, restricted by IP, and revoked (a live socket
closes with 1008 within a second, the next handshake is 401)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.integration.apim_flow import (
    DEVPORTAL,
    PUBLISHER,
    Apim,
    apim,
    expect,
    still_echoes,
    watch_close,
    ws_api_body,
)
from tests.integration.conftest import Handshake, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def am(stack: Stack) -> Iterator[Apim]:
    with apim(stack) as session:
        yield session


def mint(am: Apim, app_id: str, validity: int = 600, **properties: str) -> str:
    body: dict[str, Any] = {"validityPeriod": validity, "additionalProperties": properties}
    made = expect(
        am.http.post(f"{DEVPORTAL}/applications/{app_id}/api-keys/PRODUCTION/generate", json=body),
        200,
    )
    assert set(made) == {"keyName", "apikey", "validityTime"}, made
    return str(made["apikey"])


async def attempt(url: str, headers: dict[str, str] | None = None) -> Handshake:
    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
            await ws.send("ping")
            return Handshake(101, echoed=await asyncio.wait_for(ws.recv(), 5))
    except InvalidStatus as exc:
        return Handshake(exc.response.status_code, bytes(exc.response.body or b""))


async def until(url: str, headers: dict[str, str], status: int, limit: float = 5.0) -> Handshake:
    """Handshakes until one ends with ``status`` (the gateway learns of changes by push)."""
    started = time.monotonic()
    while True:
        result = await attempt(url, headers)
        if result.status == status and (status != 101 or result.echoed == "ping"):
            return result
        if time.monotonic() - started > limit:
            raise AssertionError(f"{url}: no {status} in {limit} s; last {result}")
        await asyncio.sleep(0.05)


def body_of(result: Handshake) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(result.body)
    return body


async def test_api_keys_minted_used_restricted_and_revoked(stack: Stack, am: Apim) -> None:
    api = ws_api_body("KeyedEcho", "/keyed", stack.ports.echo)
    api["securityScheme"] = ["api_key"]
    api_id = am.live_api(api)
    app_id, _, oauth_keys = am.subscribed_app("KeyedApp", [api_id])
    url = f"{stack.ws}/keyed/1.0.0/rooms/lobby"

    key = mint(am, app_id)
    claims = jwt.decode(key, options={"verify_signature": False})
    assert claims["iss"].endswith("/apikey") and claims["tokenType"] == "apiKey"
    await until(f"{url}?apikey={key}", {}, 101)
    assert (await attempt(url, {"apikey": key})).echoed == "ping"
    marker = [Subprotocol("choreo-api-key"), Subprotocol(key)]
    async with connect(url, subprotocols=marker, open_timeout=10) as ws:
        assert ws.subprotocol == "choreo-api-key"
        await still_echoes(ws, "as a browser would")

    # the API takes API keys only: an OAuth2 token of the same application is refused
    refused = await attempt(url, {"Authorization": f"Bearer {am.token(oauth_keys, '')}"})
    assert refused.status == 401, refused
    assert "api" in body_of(refused)["description"].lower(), refused

    # a key that never expires works too; one restricted to other addresses does not
    forever = mint(am, app_id, validity=-1)
    assert "exp" not in jwt.decode(forever, options={"verify_signature": False})
    assert (await attempt(url, {"apikey": forever})).status == 101
    here = mint(am, app_id, permittedIP="127.0.0.1,::1")
    assert (await attempt(url, {"apikey": here})).status == 101
    elsewhere = mint(am, app_id, permittedIP="10.0.0.0/8")
    outsider = await attempt(url, {"apikey": elsewhere})
    assert outsider.status == 403, outsider

    # revoke while a socket is open: it closes with 1008 within a second, a new one gets 401
    async with (
        connect(f"{url}?apikey={key}", open_timeout=10) as doomed,
        connect(url, additional_headers={"apikey": forever}, open_timeout=10) as bystander,
    ):
        await still_echoes(doomed, "before")
        watcher = asyncio.create_task(watch_close(doomed))
        async with httpx.AsyncClient(
            base_url=stack.cp_url, auth=("admin", "admin"), verify=False, timeout=30
        ) as cp:
            answer = await cp.post(
                f"{DEVPORTAL}/applications/{app_id}/api-keys/PRODUCTION/revoke",
                json={"apikey": key},
            )
        answered = time.monotonic()
        assert answer.status_code == 200, answer.text
        try:
            closed = await asyncio.wait_for(watcher, 3.0)
        except TimeoutError:
            raise AssertionError("the revoked key's socket was still open 3 s later") from None
        took = closed.at - answered
        print(f"\nrevoke API key: close {closed.code} {closed.reason!r} {took * 1000:.0f} ms")
        assert closed.code == 1008 and closed.reason, closed
        assert took < 1.0, f"closed {took:.2f} s after the revoke answer"
        await still_echoes(bystander)
    revoked = await attempt(url, {"apikey": key})
    assert revoked.status == 401, revoked
    assert (await attempt(f"{url}?apikey={key}")).status == 401

    # deleting the application revokes its other keys
    expect(am.http.delete(f"{DEVPORTAL}/applications/{app_id}"), 200)
    gone = await until(url, {"apikey": forever}, 401)
    assert "revoked" in body_of(gone)["description"].lower(), gone


async def test_which_credential_opens_which_api(stack: Stack, am: Apim) -> None:
    """README's table, row by row, on one API: published through the control plane, then the
    same API exported and deployed with the CLI (standalone mode). An application's token and
    API key open it only while the control plane owns it (they need a subscription, which a
    CLI-deployed API cannot have); a test key opens it only once the CLI deployed it."""
    api = ws_api_body("Matrix", "/matrix", stack.ports.echo)
    api["securityScheme"] = ["oauth2", "api_key"]
    api_id = am.live_api(api)
    app_id, _, oauth_keys = am.subscribed_app("MatrixApp", [api_id])
    url = f"{stack.ws}/matrix/1.0.0/rooms/lobby"
    app_token = {"Authorization": f"Bearer {am.token(oauth_keys, '')}"}
    api_key = {"apikey": mint(am, app_id)}
    test_key = {"Authorization": f"Bearer {stack.testkey('')}"}

    await until(url, app_token, 101)
    await until(url, api_key, 101)
    refused = await attempt(url, test_key)
    assert (refused.status, body_of(refused)["code"]) == (401, 900901), refused
    assert "Test keys are not accepted" in body_of(refused)["description"]

    exported = am.http.get(f"{PUBLISHER}/apis/export", params={"apiId": api_id})
    assert exported.status_code == 200, exported.text[:300]
    revisions = expect(am.http.get(f"{PUBLISHER}/apis/{api_id}/revisions"), 200)
    for revision in revisions["list"]:
        if revision["deploymentInfo"]:
            expect(am.undeploy_revision(api_id, revision["id"]), 200, 201)
    await until(url, test_key, 404)
    project = stack.work / "Matrix-1.0.0.zip"
    project.write_bytes(exported.content)
    stack.login()
    stack.mg_ok("deploy", "api", "-f", str(project), "-e", "dev", "-k", "--override")

    await until(url, test_key, 101)
    for credential in (app_token, api_key):
        standalone = await attempt(url, credential)
        assert (standalone.status, body_of(standalone)["code"]) == (403, 900908), standalone
        assert "deployed with the CLI (standalone mode)" in body_of(standalone)["description"]
    stack.mg_ok("undeploy", "api", "-n", "Matrix", "-v", "1.0.0", "-e", "dev", "-k")
