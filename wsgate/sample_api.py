"""The sample API `wsgate up` publishes through the control plane, as a publisher would:
create, change lifecycle to Published, create a revision, deploy it to Default/localhost; and
the application a developer would use it with: create an application, subscribe it, generate
its production keys, get an access token from ``/oauth2/token``.

Idempotent: an API with the same name and version is reused, and a revision is only created
and deployed when none is deployed yet; the application and its subscription are reused too.
A consumer secret is shown only when made, so a restart regenerates the sample application's
secret (tokens already issued stay valid) to print commands that work as printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

PUBLISHER_PATH = "/api/am/publisher/v4"
DEVPORTAL_PATH = "/api/am/devportal/v3"
SAMPLE_APPLICATION = "SampleChatApp"
GATEWAY = [{"name": "Default", "vhost": "localhost", "displayOnDevportal": True}]


class SampleApiError(Exception):
    """The control plane refused a step; the message names the step and its answer."""


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def load_body(path: Path, echo_port: int) -> dict[str, Any]:
    """The example's publisher JSON with the endpoints pointed at this stack's echo backend."""
    body: dict[str, Any] = json.loads(path.read_text())
    url = f"ws://localhost:{echo_port}"
    endpoints = body.setdefault("endpointConfig", {"endpoint_type": "ws"})
    for key in ("production_endpoints", "sandbox_endpoints"):
        endpoints[key] = {"url": url}
    return body


def _find(listing: Any, name: str, version: str) -> dict[str, Any] | None:
    items = listing.get("list", []) if isinstance(listing, dict) else listing
    for item in items or []:
        if item.get("name") == name and item.get("version") == version:
            return dict(item)
    return None


def _deployed(revisions: Any) -> bool:
    items = revisions.get("list", []) if isinstance(revisions, dict) else revisions
    return any(item.get("deploymentInfo") for item in items or [])


def _check(response: httpx.Response, step: str) -> Any:
    if response.status_code >= 400:
        raise SampleApiError(f"{step}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


async def ensure_published(
    cp_url: str, auth: str, body: dict[str, Any], verify: ssl.SSLContext | bool
) -> tuple[str, bool]:
    """Make sure the API exists, is Published and has a deployed revision.

    Returns:
        The API id, and whether anything was deployed now (False: it already was).
    """
    base = cp_url.rstrip("/") + PUBLISHER_PATH
    name, version = body["name"], body["version"]
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": auth}, verify=verify, timeout=30
    ) as cp:
        listing = _check(await cp.get("/apis", params={"query": f"name:{name}"}), "list APIs")
        api = _find(listing, name, version)
        if api is None:
            api = _check(await cp.post("/apis", json=body), "create API")
        api_id = str(api["id"])
        if str(api.get("lifeCycleStatus", "")).upper() != "PUBLISHED":
            details = _check(await cp.get(f"/apis/{api_id}"), "get API")
            if str(details.get("lifeCycleStatus", "")).upper() != "PUBLISHED":
                params = {"apiId": api_id, "action": "Publish"}
                _check(await cp.post("/apis/change-lifecycle", params=params), "publish API")
        revisions = _check(
            await cp.get(f"/apis/{api_id}/revisions", params={"query": "deployed:true"}),
            "list revisions",
        )
        if _deployed(revisions):
            return api_id, False
        revision = _check(
            await cp.post(f"/apis/{api_id}/revisions", json={"description": "wsgate up"}),
            "create revision",
        )
        _check(
            await cp.post(
                f"/apis/{api_id}/deploy-revision",
                params={"revisionId": str(revision["id"])},
                json=GATEWAY,
            ),
            "deploy revision",
        )
        return api_id, True


@dataclass(frozen=True)
class SampleKeys:
    """The sample application's production client credentials."""

    application_id: str
    consumer_key: str
    consumer_secret: str


def _items(listing: Any) -> list[dict[str, Any]]:
    items = listing.get("list", []) if isinstance(listing, dict) else listing
    return [dict(item) for item in items or [] if isinstance(item, dict)]


async def ensure_application(
    cp_url: str, auth: str, api_id: str, tier: str, verify: ssl.SSLContext | bool
) -> SampleKeys:
    """Make sure the sample application exists, is subscribed to ``api_id`` (with ``tier``) and
    has production keys; returns them with a consumer secret that works now."""
    base = cp_url.rstrip("/") + DEVPORTAL_PATH
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": auth}, verify=verify, timeout=30
    ) as dev:
        listing = _check(
            await dev.get("/applications", params={"query": SAMPLE_APPLICATION}),
            "list applications",
        )
        app = next((a for a in _items(listing) if a.get("name") == SAMPLE_APPLICATION), None)
        if app is None:
            body = {
                "name": SAMPLE_APPLICATION,
                "throttlingPolicy": "Unlimited",
                "description": "The application `wsgate up` uses the sample chat API with.",
                "tokenType": "JWT",
            }
            app = _check(await dev.post("/applications", json=body), "create application")
        app_id = str(app["applicationId"])
        subscriptions = _check(
            await dev.get("/subscriptions", params={"applicationId": app_id}),
            "list subscriptions",
        )
        if not any(s.get("apiId") == api_id for s in _items(subscriptions)):
            body = {"applicationId": app_id, "apiId": api_id, "throttlingPolicy": tier}
            _check(await dev.post("/subscriptions", json=body), "subscribe")
        held = _check(await dev.get(f"/applications/{app_id}/oauth-keys"), "list keys")
        key = next((k for k in _items(held) if k.get("keyType") == "PRODUCTION"), None)
        if key is None:
            wanted: dict[str, Any] = {
                "keyType": "PRODUCTION",
                "grantTypesToBeSupported": ["client_credentials"],
                "callbackUrl": "",
            }
            made = _check(
                await dev.post(f"/applications/{app_id}/generate-keys", json=wanted),
                "generate keys",
            )
            return SampleKeys(app_id, str(made["consumerKey"]), str(made["consumerSecret"]))
        secret = _check(
            await dev.post(
                f"/applications/{app_id}/oauth-keys/{key['keyMappingId']}/regenerate-secret"
            ),
            "regenerate secret",
        )
        return SampleKeys(app_id, str(secret["consumerKey"]), str(secret["consumerSecret"]))


async def application_token(
    cp_url: str, keys: SampleKeys, verify: ssl.SSLContext | bool, scope: str = ""
) -> str:
    """An access token for the application (client_credentials at ``/oauth2/token``)."""
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    async with httpx.AsyncClient(verify=verify, timeout=30) as http:
        answer = await http.post(
            cp_url.rstrip("/") + "/oauth2/token",
            data=form,
            auth=(keys.consumer_key, keys.consumer_secret),
        )
    issued = _check(answer, "get an access token")
    return str(issued["access_token"])


async def echo_with_token(
    ws_url: str, get_token: Callable[[], Awaitable[str]], limit: float = 30.0
) -> float:
    """Poll until a token from ``get_token`` carries a message to the backend and back.

    Returns:
        Seconds it took.

    Raises:
        TimeoutError: with the last failure, when ``limit`` seconds pass first.
    """
    started = time.monotonic()
    last = "no attempt"
    while time.monotonic() - started < limit:
        try:
            headers = {"Authorization": f"Bearer {await get_token()}"}
            async with connect(ws_url, additional_headers=headers, open_timeout=5) as ws:
                await ws.send("wsgate up self-check")
                reply = await asyncio.wait_for(ws.recv(), 5)
            if reply == "wsgate up self-check":
                return time.monotonic() - started
            last = f"unexpected reply {reply!r}"
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{ws_url} did not echo within {limit:.0f} s (last: {last})")
