"""Admin API: throttling policies (seeded tiers, CRUD) and gateway environments."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import (
    ADMIN,
    add_environment,
    create_api,
    create_application,
    create_revision,
    deploy,
)

POLICIES = f"{ADMIN}/throttling/policies"


def by_name(client: TestClient, kind: str) -> dict[str, dict[str, Any]]:
    answer = client.get(f"{POLICIES}/{kind}")
    assert answer.status_code == 200, answer.text
    return {p["policyName"]: p for p in answer.json()["list"]}


def test_default_tiers_are_seeded(client: TestClient) -> None:
    subscription = by_name(client, "subscription")
    assert set(subscription) == {
        "AsyncGold",
        "AsyncSilver",
        "AsyncBronze",
        "AsyncUnlimited",
        "Gold",
        "Silver",
        "Bronze",
        "Unlimited",
    }
    gold = subscription["AsyncGold"]
    assert gold["type"] == "SubscriptionThrottlePolicy"
    assert gold["defaultLimit"]["type"] == "EVENTCOUNTLIMIT"
    assert gold["defaultLimit"]["eventCount"] == {
        "eventCount": 5000,
        "timeUnit": "min",
        "unitTime": 1,
    }
    assert subscription["Bronze"]["defaultLimit"]["requestCount"]["requestCount"] == 1000
    assert set(by_name(client, "application")) == {"10PerMin", "20PerMin", "50PerMin", "Unlimited"}
    assert "Unlimited" in by_name(client, "advanced")


def policy_body(name: str = "AsyncPlatinum", **changes: Any) -> dict[str, Any]:
    body = {
        "policyName": name,
        "displayName": name,
        "description": "lots",
        "defaultLimit": {
            "type": "EVENTCOUNTLIMIT",
            "eventCount": {"eventCount": 9000, "timeUnit": "min", "unitTime": 1},
        },
        "stopOnQuotaReach": True,
    }
    body.update(changes)
    return body


@pytest.mark.parametrize("kind", ["subscription", "application", "advanced"])
def test_policy_crud(client: TestClient, kind: str) -> None:
    made = client.post(f"{POLICIES}/{kind}", json=policy_body())
    assert made.status_code == 201, made.text
    policy_id = made.json()["policyId"]
    assert client.post(f"{POLICIES}/{kind}", json=policy_body()).status_code == 409
    fetched = client.get(f"{POLICIES}/{kind}/{policy_id}").json()
    assert fetched["defaultLimit"]["eventCount"]["eventCount"] == 9000
    flat = policy_body(
        defaultLimit={"type": "REQUESTCOUNTLIMIT", "requestCount": 30, "timeUnit": "sec"}
    )
    updated = client.put(f"{POLICIES}/{kind}/{policy_id}", json=flat)
    assert updated.status_code == 200, updated.text
    assert updated.json()["defaultLimit"]["requestCount"] == {
        "requestCount": 30,
        "timeUnit": "sec",
        "unitTime": 1,
    }
    renamed = client.put(f"{POLICIES}/{kind}/{policy_id}", json=policy_body("Other"))
    assert renamed.status_code == 400 and "policyName" in renamed.json()["description"]
    assert client.delete(f"{POLICIES}/{kind}/{policy_id}").status_code == 200
    assert client.get(f"{POLICIES}/{kind}/{policy_id}").status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"policyName": "bad name!"}, "policyName"),
        ({"defaultLimit": {"type": "EVENTCOUNTLIMIT"}}, "eventCount"),
        ({"defaultLimit": {"type": "BANDWIDTHLIMIT"}}, "defaultLimit.type"),
        (
            {"defaultLimit": {"type": "EVENTCOUNTLIMIT", "eventCount": {"eventCount": -1}}},
            "defaultLimit.eventCount.eventCount",
        ),
        (
            {
                "defaultLimit": {
                    "type": "EVENTCOUNTLIMIT",
                    "eventCount": {"eventCount": 1, "timeUnit": "year"},
                }
            },
            "timeUnit",
        ),
    ],
    ids=["name", "missing-count", "type", "negative", "unit"],
)
def test_bad_policy_is_400_naming_the_field(
    client: TestClient, changes: dict[str, Any], field: str
) -> None:
    answer = client.post(f"{POLICIES}/subscription", json=policy_body(**changes))
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["description"]


def test_unknown_policy_ids_are_404(client: TestClient) -> None:
    assert client.get(f"{POLICIES}/subscription/not-a-uuid").status_code == 404
    app_policy = by_name(client, "application")["10PerMin"]["policyId"]
    # An application policy is not a subscription policy.
    assert client.get(f"{POLICIES}/subscription/{app_policy}").status_code == 404


def test_policies_in_use_cannot_be_deleted(client: TestClient) -> None:
    create_api(client, policies=["AsyncGold"])
    create_application(client, throttlingPolicy="10PerMin")
    gold = by_name(client, "subscription")["AsyncGold"]["policyId"]
    ten = by_name(client, "application")["10PerMin"]["policyId"]
    in_use = client.delete(f"{POLICIES}/subscription/{gold}")
    assert in_use.status_code == 409 and "Echo" in in_use.json()["description"]
    assert client.delete(f"{POLICIES}/application/{ten}").status_code == 409


def test_environments(client: TestClient) -> None:
    listed = client.get(f"{ADMIN}/environments").json()
    [default] = listed["list"]
    assert default["name"] == "Default"
    assert default["vhosts"][0]["host"] == "localhost"
    assert default["isReadOnly"] is True
    assert client.delete(f"{ADMIN}/environments/{default['id']}").status_code == 409
    edge = add_environment(client, "Edge", host="edge.example")
    assert edge["displayName"] == "Edge"
    duplicate = client.post(
        f"{ADMIN}/environments", json={"name": "Edge", "vhosts": [{"host": "x"}]}
    )
    assert duplicate.status_code == 409
    body = {"name": "Edge", "displayName": "Edge gw", "vhosts": [{"host": "edge2.example"}]}
    updated = client.put(f"{ADMIN}/environments/{edge['id']}", json=body)
    assert updated.status_code == 200 and updated.json()["vhosts"][0]["host"] == "edge2.example"
    # deploy-revision checks environment and vhost
    api_id = create_api(client)["id"]
    revision = create_revision(client, api_id)["id"]
    unknown = deploy(client, api_id, revision, "Nowhere")
    assert unknown.status_code == 400 and "Nowhere" in unknown.json()["description"]
    body_wrong_host = [{"name": "Edge", "vhost": "localhost"}]
    wrong_host = client.post(
        f"/api/am/publisher/v4/apis/{api_id}/deploy-revision",
        params={"revisionId": revision},
        json=body_wrong_host,
    )
    assert wrong_host.status_code == 400 and "vhost" in wrong_host.json()["description"]
    ok = client.post(
        f"/api/am/publisher/v4/apis/{api_id}/deploy-revision",
        params={"revisionId": revision},
        json=[{"name": "Edge", "vhost": "edge2.example"}],
    )
    assert ok.status_code == 201, ok.text
    assert client.delete(f"{ADMIN}/environments/{edge['id']}").status_code == 409
    assert client.get(f"{ADMIN}/environments/{edge['id']}x").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a b", "vhosts": [{"host": "x"}]}, "name"),
        ({"name": "E", "vhosts": []}, "vhosts"),
        ({"name": "E", "vhosts": [{"host": "x", "wsPort": 0}]}, "vhosts[0].wsPort"),
        ({"name": "E", "vhosts": [{"host": "x"}, {"host": "x"}]}, "vhosts"),
    ],
    ids=["name", "no-vhosts", "port", "twice"],
)
def test_bad_environment_is_400(client: TestClient, body: dict[str, Any], field: str) -> None:
    answer = client.post(f"{ADMIN}/environments", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["description"]
