"""The REST app in-process (ASGI, no sockets): error shapes, auth, list filters."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from adapter.auth import Authenticator
from adapter.cache import SnapshotCache
from adapter.deployments import Registry
from adapter.project import zip_dir
from adapter.rest import AdapterState, create_app
from adapter.xds import XdsStatus
from wsgate_common.backoff import Backoff, BackoffPolicy
from wsgate_proto import definition_pb2

ECHO = Path(__file__).resolve().parents[2] / "data" / "projects" / "EchoWebSocket-1.0.0"
API = "/api/mgw/adapter/0.1"
ADMIN = ("admin", "admin")


@pytest.fixture
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, AdapterState]]:
    state = AdapterState(
        Registry(SnapshotCache()),
        Authenticator({"admin": "admin"}, b"k" * 32),
        XdsStatus(),
        "boot",
        ready=True,
    )
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="https://adapter") as client:
        yield client, state


async def test_health_ready_and_unknown_path(http: tuple[httpx.AsyncClient, AdapterState]) -> None:
    client, state = http
    assert (await client.get("/health")).json() == {"status": "healthy"}
    assert (await client.get("/ready")).status_code == 200
    state.ready = False
    assert (await client.get("/ready")).status_code == 503
    r = await client.get("/nope")
    assert r.status_code == 404
    assert set(r.json()) == {"code", "message", "description"}


async def test_token_endpoint(http: tuple[httpx.AsyncClient, AdapterState]) -> None:
    client, _ = http
    r = await client.post(f"{API}/oauth2/token", json={"username": "admin", "password": "no"})
    assert (r.status_code, r.json()["code"]) == (401, 900901)
    r = await client.post(f"{API}/oauth2/token")
    assert (r.status_code, r.json()["code"]) == (401, 900902)
    r = await client.post(f"{API}/oauth2/token", auth=ADMIN)
    assert r.status_code == 200
    token = r.json()["accessToken"]
    r = await client.get(f"{API}/apis", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


async def test_deploy_needs_file_and_list_filters(
    http: tuple[httpx.AsyncClient, AdapterState],
) -> None:
    client, state = http
    r = await client.post(f"{API}/apis", auth=ADMIN)
    assert r.status_code == 400
    assert "file" in r.json()["description"]
    files = {"file": ("echo.zip", zip_dir(ECHO), "application/zip")}
    assert (await client.post(f"{API}/apis", files=files, auth=ADMIN)).status_code == 200
    state.registry.deploy(
        definition_pb2.ApiDefinition(
            id="uuid-1",
            name="Chat",
            version="2",
            context="/chat",
            production_endpoint=definition_pb2.Endpoint(url="ws://b"),
            deployments=[
                definition_pb2.Deployment(name="Default"),
                definition_pb2.Deployment(name="Edge", vhost="edge.example"),
            ],
            source="adapter",
        )
    )

    async def names(query: str = "", limit: int = 100) -> tuple[int, list[str]]:
        params: dict[str, str | int] = {"query": query, "limit": limit}
        body = (await client.get(f"{API}/apis", params=params, auth=ADMIN)).json()
        return body["total"], [f"{row['apiName']}@{row['vhost']}" for row in body["list"]]

    assert await names() == (3, ["Chat@edge.example", "Chat@localhost", "EchoWebSocket@localhost"])
    assert await names("echo") == (1, ["EchoWebSocket@localhost"])
    assert await names("name:Chat vhost:edge") == (1, ["Chat@edge.example"])
    assert await names("env:Edge") == (1, ["Chat@edge.example"])
    assert await names("version:2 context:/chat/2") == (2, ["Chat@edge.example", "Chat@localhost"])
    assert await names(limit=1) == (3, ["Chat@edge.example"])

    # Undeploy only from one vhost.
    params = {"apiName": "Chat", "version": "2", "vhost": "edge.example"}
    assert (await client.delete(f"{API}/apis", params=params, auth=ADMIN)).status_code == 200
    assert await names("Chat") == (1, ["Chat@localhost"])
    r = await client.delete(f"{API}/apis", params={"apiName": "Chat"}, auth=ADMIN)
    assert r.status_code == 400


async def test_wrong_passwords_are_held_back_on_token_and_basic(
    http: tuple[httpx.AsyncClient, AdapterState], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 item 6: after the free failures, 429 + Retry-After on /oauth2/token and on
    Basic-authenticated calls alike, for the user and for the address."""
    client, state = http
    clock = [100.0]
    state.backoff = Backoff(BackoffPolicy(free_failures=3, max_delay=30), lambda: clock[0])
    wrong = {"username": "admin", "password": "guess"}
    codes = [(await client.post(f"{API}/oauth2/token", json=wrong)).status_code for _ in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    held = await client.post(f"{API}/oauth2/token", auth=ADMIN)
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert held.json()["code"] == 429 and "retry after" in held.json()["description"]
    assert (await client.get(f"{API}/apis", auth=ADMIN)).status_code == 429
    assert (await client.get(f"{API}/apis", auth=("ghost", "x"))).status_code == 429  # address
    clock[0] += 31
    assert (await client.post(f"{API}/oauth2/token", auth=ADMIN)).status_code == 200
    assert (await client.get(f"{API}/apis", auth=ADMIN)).status_code == 200
    assert "sign-in backoff" in caplog.text and "guess" not in caplog.text


async def test_oversized_upload_is_413_unread(http: tuple[httpx.AsyncClient, AdapterState]) -> None:
    client, _ = http
    data = b"x" * (12 * 1024 * 1024)
    r = await client.post(f"{API}/apis", files={"file": ("p.zip", data)}, auth=ADMIN)
    assert r.status_code == 413 and set(r.json()) == {"code", "message", "description"}


def _control_plane_api(
    api_id: str = "5b0c-uuid", context: str = "/chat"
) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id=api_id,
        name="ChatWebSocket",
        version="1.0.0",
        context=context,
        production_endpoint=definition_pb2.Endpoint(url="ws://b"),
        revision_id="rev-7",
        source="control-plane",
    )


def _project(tmp_path: Path, name: str, context: str) -> bytes:
    target = tmp_path / f"{name}-1.0.0"
    shutil.copytree(ECHO, target)
    api = yaml.safe_load((target / "api.yaml").read_text())
    api["data"].update(name=name, context=context)
    (target / "api.yaml").write_text(yaml.safe_dump(api))
    return zip_dir(target)


async def test_the_cli_cannot_undeploy_or_replace_a_control_plane_api(
    http: tuple[httpx.AsyncClient, AdapterState], tmp_path: Path
) -> None:
    """Issue 13 item 2: 409 naming the owner and the publisher's undeploy-revision; the API
    stays deployed and listed as owned by the control plane."""
    client, state = http
    state.registry.deploy(_control_plane_api())
    params = {"apiName": "ChatWebSocket", "version": "1.0.0"}
    r = await client.delete(f"{API}/apis", params=params, auth=ADMIN)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["message"] == "API owned by the control plane"
    assert "cannot undeploy" in body["description"]
    assert "/apis/5b0c-uuid/undeploy-revision?revisionId=rev-7" in body["description"]
    assert [e.api.id for e in state.registry.entries()] == ["5b0c-uuid"]

    # A CLI project on the same context and version, with or without override.
    other = _project(tmp_path, "Other", "/chat")  # another name on the same /chat/1.0.0
    for override in ("false", "true"):
        files = {"file": ("other.zip", other, "application/zip")}
        r = await client.post(f"{API}/apis", files=files, params={"override": override}, auth=ADMIN)
        assert r.status_code == 409, r.text
        assert "deployed by the control plane" in r.json()["description"]
        assert "undeploy-revision" in r.json()["description"]
    listing = (await client.get(f"{API}/apis", auth=ADMIN)).json()["list"]
    assert [(row["id"], row["source"]) for row in listing] == [("5b0c-uuid", "control-plane")]


async def test_docs_page_and_its_files_are_served_here(
    http: tuple[httpx.AsyncClient, AdapterState],
) -> None:
    """/docs loads nothing from another host (issue 13); /redoc is not served."""
    client, _ = http
    page = await client.get("/docs")
    assert page.status_code == 200
    names = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in names, names
    assert all(name.startswith("/docs/assets/") for name in names), names
    for name in names:
        assert (await client.get(name)).status_code == 200, name
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (await client.get("/redoc")).status_code == 404
