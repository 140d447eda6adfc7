"""Lifecycle actions follow WSO2's transition table."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from control_plane.services.lifecycle import TRANSITIONS, next_state
from tests.unit.control_plane.helpers import BASE, create_api, create_revision, deploy


def change(client: TestClient, api_id: str, action: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": action}
    )
    return response.status_code, response.json()


def test_publish_then_block_then_republish(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    status, body = change(client, api_id, "Publish")
    assert status == 200, body
    assert body["lifecycleState"]["state"] == "PUBLISHED"  # type: ignore[index]
    assert body["workflowStatus"] == "APPROVED"
    assert client.get(f"{BASE}/apis/{api_id}").json()["lifeCycleStatus"] == "PUBLISHED"
    assert change(client, api_id, "Block")[1]["lifecycleState"]["state"] == "BLOCKED"  # type: ignore[index]
    assert change(client, api_id, "Re-Publish")[0] == 200
    state = client.get(f"{BASE}/apis/{api_id}/lifecycle-state").json()
    assert state["state"] == "PUBLISHED"
    assert {"event": "Deprecate", "targetState": "DEPRECATED"} in state["availableTransitions"]


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "Retire"),
        ([], "Block"),
        (["Publish"], "Re-Publish"),
        (["Publish", "Deprecate"], "Publish"),
        (["Publish", "Deprecate", "Retire"], "Publish"),
    ],
)
def test_illegal_transitions_are_409(client: TestClient, path: list[str], illegal: str) -> None:
    api_id = create_api(client)["id"]
    for action in path:
        assert change(client, api_id, action)[0] == 200
    status, body = change(client, api_id, illegal)
    assert status == 409
    assert illegal in str(body["description"])


def test_unknown_action_is_400_and_unknown_api_404(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    assert change(client, api_id, "Explode")[0] == 400
    assert change(client, "0b0e4f7a-5d7e-4e53-9c55-4ab1b0e0c0de", "Publish")[0] == 404


def test_actions_are_case_insensitive() -> None:
    assert next_state("CREATED", "deploy as a prototype") == "PROTOTYPED"
    assert next_state("PROTOTYPED", "DEMOTE TO CREATED") == "CREATED"


def test_retired_is_terminal_and_every_target_is_a_state() -> None:
    assert TRANSITIONS["RETIRED"] == {}
    for moves in TRANSITIONS.values():
        assert set(moves.values()) <= set(TRANSITIONS)


def test_retire_undeploys_everywhere(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)
    assert deploy(client, api_id, revision["id"], "Default").status_code == 201
    for action in ("Publish", "Deprecate", "Retire"):
        assert change(client, api_id, action)[0] == 200
    revisions = client.get(f"{BASE}/apis/{api_id}/revisions").json()["list"]
    assert revisions[0]["deploymentInfo"] == []
    assert deploy(client, api_id, revision["id"], "Default").status_code == 409
