"""Each gateway environment runs its own revision of an API, as in WSO2: revision 2 goes to
`Default` while revision 1 stays on `edge`. Real processes: the stack's router and enforcer
serve the `Default` label, a second router and enforcer serve `edge`, both fed by one adapter
that the control plane pushes to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.apim_flow import (
    ADMIN,
    PUBLISHER,
    Apim,
    apim,
    expect,
    wait_status_sync,
    ws_api_body,
)
from tests.integration.conftest import Stack, handshake
from tests.procs import free_port, http_ok, running

pytestmark = pytest.mark.integration


@dataclass
class Edge:
    ws: str  # ws://localhost:<port> of the edge router


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Iterator[Edge]:
    """An enforcer and a router for the `edge` label, next to the stack's `Default` ones."""
    assert stack.log_dir is not None
    grpc_port, http_port, ws_port, wss_port = free_port(), free_port(), free_port(), free_port()
    env = {
        **stack.env,
        "WSGATE_LABEL": "edge",
        "WSGATE_ENFORCER_GRPC_PORT": str(grpc_port),
        "WSGATE_ENFORCER_HTTP_PORT": str(http_port),
        "WSGATE_ENFORCER_ADDRESS": f"localhost:{grpc_port}",
        "WSGATE_ENFORCER_HTTP_URL": f"http://localhost:{http_port}",
        "WSGATE_ROUTER_PORT": str(ws_port),
        "WSGATE_ROUTER_TLS_PORT": str(wss_port),
    }
    with contextlib.ExitStack() as procs:
        ready = f"http://127.0.0.1:{http_port}/ready"
        procs.enter_context(
            running("enforcer-edge", ["enforcer"], env, stack.log_dir, lambda: http_ok(ready), 60)
        )
        router_ready = f"http://127.0.0.1:{ws_port}/ready"
        procs.enter_context(
            running(
                "router-edge", ["router"], env, stack.log_dir, lambda: http_ok(router_ready), 60
            )
        )
        yield Edge(ws=f"ws://localhost:{ws_port}")


@pytest.fixture(scope="module")
def am(stack: Stack) -> Iterator[Apim]:
    with apim(stack) as session:
        yield session


def _deploy(am: Apim, api_id: str, revision_id: str, *environments: str) -> list[dict[str, str]]:
    body = [
        {"name": name, "vhost": "localhost", "displayOnDevportal": True} for name in environments
    ]
    answer = am.http.post(
        f"{PUBLISHER}/apis/{api_id}/deploy-revision", params={"revisionId": revision_id}, json=body
    )
    result: list[dict[str, str]] = expect(answer, 201)
    return result


def test_revision_2_on_default_while_revision_1_stays_on_edge(
    stack: Stack, edge: Edge, am: Apim
) -> None:
    environment = {"name": "edge", "vhosts": [{"host": "localhost", "wsPort": 9090}]}
    expect(am.http.post(f"{ADMIN}/environments", json=environment), 201)
    body = ws_api_body("PerEnv", "/perenv", stack.ports.echo)
    api_id = am.create_api(body)
    am.publish(api_id)
    first = am.revision(api_id)
    _deploy(am, api_id, first, "Default", "edge")
    # Revision 2 adds a topic: only the label running it serves /news.
    body["operations"].append({"target": "/news", "verb": "PUBLISH", "authType": "Any"})
    expect(am.http.put(f"{PUBLISHER}/apis/{api_id}", json=body), 200)
    second = am.revision(api_id)
    deployed = _deploy(am, api_id, second, "Default")

    _, _, keys = am.subscribed_app("PerEnvApp", [api_id])
    token = am.token(keys)
    default_news = f"{stack.ws}/perenv/1.0.0/news"
    edge_news = f"{edge.ws}/perenv/1.0.0/news"
    wait_status_sync(default_news, token, 101)
    wait_status_sync(f"{edge.ws}/perenv/1.0.0/rooms/1", token, 101)  # edge serves the API...
    assert handshake(edge_news, token, "ping").status == 404  # ...at revision 1
    assert handshake(f"{stack.ws}/perenv/1.0.0/rooms/1", token, "ping").echoed == "ping"

    listed = expect(am.http.get(f"{PUBLISHER}/apis/{api_id}/revisions"), 200)["list"]
    where = {r["id"]: sorted(d["name"] for d in r["deploymentInfo"]) for r in listed}
    assert where == {first: ["edge"], second: ["Default"]}
    assert [(d["name"], d["deploymentStatus"]) for d in deployed] == [("Default", "DEPLOYED")]

    # Moving edge to revision 2 as well: it serves /news too.
    _deploy(am, api_id, second, "edge")
    wait_status_sync(edge_news, token, 101)
