"""The sample API `wsgate up` publishes through the control plane, as a publisher would:
create, change lifecycle to Published, create a revision, deploy it to Default/localhost.

Idempotent: an API with the same name and version is reused, and a revision is only created
and deployed when none is deployed yet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

PUBLISHER_PATH = "/api/am/publisher/v4"
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


async def echo_through_router(
    router_url: str, ws_url: str, auth: str, limit: float = 30.0
) -> float:
    """Poll until a testkey token carries a message to the backend and back through the router.

    Returns:
        Seconds it took.

    Raises:
        TimeoutError: with the last failure, when ``limit`` seconds pass first.
    """
    started = time.monotonic()
    last = "no attempt"
    async with httpx.AsyncClient(verify=False, timeout=5) as http:
        while time.monotonic() - started < limit:
            try:
                answer = await http.post(
                    f"{router_url}/testkey", headers={"Authorization": auth}, data={"scope": ""}
                )
                if answer.status_code != 200:
                    raise RuntimeError(f"/testkey answered {answer.status_code}")
                headers = {"Authorization": f"Bearer {answer.text.strip()}"}
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
