"""The API Manager workflow over the control plane's REST APIs, as a platform team would call
them: publisher (``/api/am/publisher/v4``), admin (``/api/am/admin/v4``), developer portal
(``/api/am/devportal/v3``) and the OAuth2 token service (``/oauth2``).

Every call asserts its status and, on failure, shows the answer, so a failing test names the
step that broke. Helpers that poll the gateway measure how long a change took to apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import Handshake, Stack, try_handshake

PUBLISHER = "/api/am/publisher/v4"
ADMIN = "/api/am/admin/v4"
DEVPORTAL = "/api/am/devportal/v3"
SCOPE = "read:notifications"
DEFAULT_VHOST = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]


def expect(answer: httpx.Response, *statuses: int) -> Any:
    """The JSON body of ``answer`` after checking its status is one of ``statuses``."""
    assert answer.status_code in statuses, (
        f"{answer.request.method} {answer.request.url} -> {answer.status_code} "
        f"(wanted {'/'.join(map(str, statuses))}): {answer.text[:1000]}"
    )
    if not answer.content:
        return {}
    try:
        return answer.json()
    except json.JSONDecodeError:
        return {}


def expect_error(answer: httpx.Response, status: int, *mentions: str) -> dict[str, Any]:
    """A WSO2 error body ``{code, message, description}`` with ``status``, naming ``mentions``."""
    body = expect(answer, status)
    assert isinstance(body, dict) and set(body) >= {"code", "message", "description"}, body
    text = f"{body['message']} {body['description']}".lower()
    for word in mentions:
        assert word.lower() in text, f"{word!r} not in the error: {body}"
    return body


def denial(result: Handshake, status: int, code: int | None = None) -> dict[str, Any]:
    """The refused handshake's JSON body, after checking its HTTP status and WSO2 code."""
    assert result.status == status, f"wanted {status}, got {result.status}: {result.body[:500]!r}"
    body = json.loads(result.body)
    assert set(body) >= {"code", "message", "description"}, body
    if code is not None:
        assert int(body["code"]) == code, f"wanted code {code}: {body}"
    return dict(body)


def ws_api_body(
    name: str,
    context: str,
    echo_port: int,
    *,
    sandbox: bool = True,
    policies: tuple[str, ...] = ("AsyncGold",),
    scope_roles: tuple[str, ...] = ("subscriber",),
    version: str = "1.0.0",
    scope: str = SCOPE,
) -> dict[str, Any]:
    """A WebSocket API like the seed's EchoWebSocket: ``/notifications`` (SUBSCRIBE) needs
    ``read:notifications`` (bound to ``scope_roles``), ``/rooms/{roomId}`` (PUBLISH) no scope."""
    endpoints: dict[str, Any] = {
        "endpoint_type": "ws",
        "production_endpoints": {"url": f"ws://localhost:{echo_port}"},
    }
    if sandbox:
        endpoints["sandbox_endpoints"] = {"url": f"ws://localhost:{echo_port}/sandbox"}
    return {
        "name": name,
        "description": f"{name}: the seed's echo API",
        "context": context,
        "version": version,
        "type": "WS",
        "transport": ["ws", "wss"],
        "policies": list(policies),
        "securityScheme": ["oauth2"],
        "visibility": "PUBLIC",
        "endpointConfig": endpoints,
        "scopes": [
            {
                "scope": {
                    "name": scope,
                    "displayName": "Read notifications",
                    "description": "Subscribe to the notifications topic",
                    "bindings": list(scope_roles),
                },
                "shared": False,
            }
        ],
        "operations": [
            {"target": "/notifications", "verb": "SUBSCRIBE", "authType": "Any", "scopes": [scope]},
            {"target": "/rooms/{roomId}", "verb": "PUBLISH", "authType": "Any", "scopes": []},
        ],
    }


@dataclass
class Keys:
    application_id: str
    consumer_key: str
    consumer_secret: str
    key_mapping_id: str
    key_type: str


class Apim:
    """One admin session against a stack's control plane (TLS unverified, like ``curl -k``)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(
            base_url=stack.cp_url, auth=("admin", "admin"), verify=False, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    # --- publisher --------------------------------------------------------------------------

    def create_api(self, body: dict[str, Any]) -> str:
        created = expect(self.http.post(f"{PUBLISHER}/apis", json=body), 201)
        return str(created["id"])

    def lifecycle(self, api_id: str, action: str) -> httpx.Response:
        return self.http.post(
            f"{PUBLISHER}/apis/change-lifecycle", params={"apiId": api_id, "action": action}
        )

    def publish(self, api_id: str) -> None:
        changed = expect(self.lifecycle(api_id, "Publish"), 200)
        assert changed["lifecycleState"]["state"] == "PUBLISHED", changed

    def revision(self, api_id: str) -> str:
        made = expect(
            self.http.post(f"{PUBLISHER}/apis/{api_id}/revisions", json={"description": "e2e"}),
            201,
        )
        return str(made["id"])

    def deploy_revision(self, api_id: str, revision_id: str) -> httpx.Response:
        return self.http.post(
            f"{PUBLISHER}/apis/{api_id}/deploy-revision",
            params={"revisionId": revision_id},
            json=DEFAULT_VHOST,
        )

    def undeploy_revision(self, api_id: str, revision_id: str) -> httpx.Response:
        return self.http.post(
            f"{PUBLISHER}/apis/{api_id}/undeploy-revision",
            params={"revisionId": revision_id},
            json=DEFAULT_VHOST,
        )

    def live_api(self, body: dict[str, Any]) -> str:
        """create -> Publish -> revision -> deploy-revision Default/localhost."""
        api_id = self.create_api(body)
        self.publish(api_id)
        expect(self.deploy_revision(api_id, self.revision(api_id)), 200, 201)
        return api_id

    def block_subscription(self, subscription_id: str, state: str = "BLOCKED") -> httpx.Response:
        return self.http.post(
            f"{PUBLISHER}/subscriptions/block-subscription",
            params={"subscriptionId": subscription_id, "blockState": state},
        )

    def unblock_subscription(self, subscription_id: str) -> httpx.Response:
        return self.http.post(
            f"{PUBLISHER}/subscriptions/unblock-subscription",
            params={"subscriptionId": subscription_id},
        )

    # --- developer portal -------------------------------------------------------------------

    def create_application(self, name: str, policy: str = "Unlimited") -> str:
        body = {"name": name, "throttlingPolicy": policy, "description": name, "tokenType": "JWT"}
        made = expect(self.http.post(f"{DEVPORTAL}/applications", json=body), 201)
        return str(made["applicationId"])

    def subscribe_answer(self, app_id: str, api_id: str, tier: str) -> httpx.Response:
        body = {"applicationId": app_id, "apiId": api_id, "throttlingPolicy": tier}
        return self.http.post(f"{DEVPORTAL}/subscriptions", json=body)

    def subscribe(self, app_id: str, api_id: str, tier: str = "AsyncGold") -> str:
        made = expect(self.subscribe_answer(app_id, api_id, tier), 201)
        return str(made["subscriptionId"])

    def generate_keys(self, app_id: str, key_type: str = "PRODUCTION") -> Keys:
        body = {
            "keyType": key_type,
            "grantTypesToBeSupported": ["client_credentials"],
            "callbackUrl": "",
        }
        made = expect(
            self.http.post(f"{DEVPORTAL}/applications/{app_id}/generate-keys", json=body), 200, 201
        )
        assert made["keyType"] == key_type, made
        return Keys(
            app_id, made["consumerKey"], made["consumerSecret"], made["keyMappingId"], key_type
        )

    def generate_token(self, keys: Keys, validity: int, scopes: list[str]) -> dict[str, Any]:
        body = {
            "consumerSecret": keys.consumer_secret,
            "validityPeriod": validity,
            "scopes": scopes,
            "revokeToken": "",
        }
        path = (
            f"{DEVPORTAL}/applications/{keys.application_id}"
            f"/oauth-keys/{keys.key_mapping_id}/generate-token"
        )
        return dict(expect(self.http.post(path, json=body), 200))

    # --- OAuth2 -----------------------------------------------------------------------------

    def token_answer(self, keys: Keys, scope: str = SCOPE) -> httpx.Response:
        """``POST /oauth2/token`` (client_credentials, client authenticated with Basic)."""
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        return httpx.post(
            f"{self.stack.cp_url}/oauth2/token",
            data=form,
            auth=(keys.consumer_key, keys.consumer_secret),
            verify=False,
            timeout=30,
        )

    def token(self, keys: Keys, scope: str = SCOPE) -> str:
        issued = expect(self.token_answer(keys, scope), 200)
        assert issued["token_type"].lower() == "bearer", issued
        return str(issued["access_token"])

    def revoke(self, keys: Keys, token: str) -> httpx.Response:
        return httpx.post(
            f"{self.stack.cp_url}/oauth2/revoke",
            data={"token": token},
            auth=(keys.consumer_key, keys.consumer_secret),
            verify=False,
            timeout=30,
        )

    def subscribed_app(
        self, name: str, api_ids: list[str], tier: str = "AsyncGold"
    ) -> tuple[str, list[str], Keys]:
        """An application subscribed to ``api_ids`` with production keys."""
        app_id = self.create_application(name)
        subscriptions = [self.subscribe(app_id, api_id, tier) for api_id in api_ids]
        return app_id, subscriptions, self.generate_keys(app_id)


@contextlib.contextmanager
def apim(stack: Stack) -> Iterator[Apim]:
    session = Apim(stack)
    try:
        yield session
    finally:
        session.close()


async def wait_status(
    url: str, token: str, status: int, limit: float = 5.0, since: float | None = None
) -> tuple[float, Handshake]:
    """Poll handshakes on ``url`` until one ends with ``status``; (seconds taken, that result).

    101 counts only with the message echoed back. Raises AssertionError after ``limit``."""
    started = time.monotonic() if since is None else since
    last: Handshake | None = None
    while time.monotonic() - started < limit:
        last = await try_handshake(url, token, "ping")
        if last.status == status and (status != 101 or last.echoed == "ping"):
            took = time.monotonic() - started
            print(f"\n{url}: {status} after {took * 1000:.0f} ms")
            return took, last
        await asyncio.sleep(0.01)
    raise AssertionError(f"{url}: no {status} within {limit} s; last answer {last}")


def wait_status_sync(url: str, token: str, status: int, limit: float = 5.0) -> Handshake:
    return asyncio.run(wait_status(url, token, status, limit))[1]


@dataclass
class Closed:
    code: int | None
    reason: str
    at: float  # time.monotonic() when the client saw the close
    wall: float  # time.time() at that moment


@contextlib.asynccontextmanager
async def open_ws(url: str, token: str) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        await ws.send("first")
        assert await asyncio.wait_for(ws.recv(), 5) == "first"
        yield ws


async def watch_close(ws: ClientConnection) -> Closed:
    """Read until the connection closes; what the server said and when."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        received = exc.rcvd
        return Closed(
            received.code if received else None,
            received.reason if received else "",
            time.monotonic(),
            time.time(),
        )


async def still_echoes(ws: ClientConnection, message: str = "still here") -> None:
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), 5) == message
