"""Issue 12 item 3: a publisher cannot hijack another API's scope, shared scopes (publisher
``/scopes``), and /oauth2/token takes bindings only from published or deployed APIs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import BASE, DEVPORTAL, api_body

ADMIN = ("admin", "admin")
PUB = ("pub", "pub")
DEV = ("dev", "dev")


@pytest.fixture
def team(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(
        update={
            "cp_users": "admin:admin,dev:dev,pub:pub",
            "cp_roles": "dev=subscriber;pub=publisher",
        }
    )
    with TestClient(create_app(settings)) as client:
        client.auth = ADMIN
        yield client


def _scoped(name: str, context: str, scope: str, bindings: list[str], shared: bool = False) -> Any:
    return api_body(
        name=name,
        context=context,
        scopes=[{"scope": {"name": scope, "bindings": bindings}, "shared": shared}],
        operations=[{"target": "/t", "verb": "SUBSCRIBE", "scopes": [scope]}],
        policies=["AsyncGold"],
    )


def _publish(client: TestClient, api_id: str, auth: tuple[str, str] = ADMIN) -> None:
    answer = client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}, auth=auth
    )
    assert answer.status_code == 200, answer.text


def _token_scopes(client: TestClient, user: tuple[str, str], scope: str) -> list[str]:
    app = client.post(
        f"{DEVPORTAL}/applications",
        json={"name": f"app-{uuid.uuid4().hex[:8]}", "throttlingPolicy": "Unlimited"},
        auth=user,
    ).json()
    keys = client.post(
        f"{DEVPORTAL}/applications/{app['applicationId']}/generate-keys",
        json={"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]},
        auth=user,
    ).json()
    answer = client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(keys["consumerKey"], keys["consumerSecret"]),
    )
    assert answer.status_code == 200, answer.text
    scopes: list[str] = answer.json()["scope"].split()
    return scopes


def test_the_reported_hijack_is_refused(team: TestClient) -> None:
    victim = team.post(f"{BASE}/apis", json=_scoped("Victim", "/victim", "adm:secret", ["admin"]))
    assert victim.status_code == 201, victim.text
    _publish(team, victim.json()["id"])
    # another publisher redeclares the scope in a draft, bound to subscriber
    draft = team.post(
        f"{BASE}/apis", json=_scoped("Mine", "/mine", "adm:secret", ["subscriber"]), auth=PUB
    )
    assert draft.status_code == 409, draft.text
    assert "adm:secret" in draft.json()["description"]
    # nor by changing an existing API of theirs
    mine = team.post(f"{BASE}/apis", json=_scoped("Mine", "/mine", "mine:read", []), auth=PUB)
    assert mine.status_code == 201, mine.text
    changed = team.put(
        f"{BASE}/apis/{mine.json()['id']}",
        json=_scoped("Mine", "/mine", "adm:secret", ["subscriber"]),
        auth=PUB,
    )
    assert changed.status_code == 409, changed.text
    # nor by another version of the victim's API under their own name
    version = team.post(
        f"{BASE}/apis",
        json={**_scoped("Victim", "/victim2", "adm:secret", ["subscriber"]), "version": "9"},
        auth=PUB,
    )
    assert version.status_code == 409, version.text
    assert _token_scopes(team, DEV, "adm:secret") == ["default"]


def test_a_provider_may_reuse_its_own_scopes_across_its_apis(team: TestClient) -> None:
    first = team.post(f"{BASE}/apis", json=_scoped("Own", "/own", "own:read", ["subscriber"]))
    assert first.status_code == 201
    second = team.post(
        f"{BASE}/apis", json={**_scoped("Own", "/own", "own:read", ["subscriber"]), "version": "2"}
    )
    assert second.status_code == 201, second.text


def test_draft_bindings_do_not_reach_tokens_until_published(team: TestClient) -> None:
    draft = team.post(
        f"{BASE}/apis", json=_scoped("Draft", "/draft", "draft:read", ["subscriber"]), auth=PUB
    )
    assert draft.status_code == 201, draft.text
    assert _token_scopes(team, DEV, "draft:read") == ["default"]
    _publish(team, draft.json()["id"], PUB)
    assert _token_scopes(team, DEV, "draft:read") == ["draft:read"]


def test_shared_scopes_crud_and_use(team: TestClient) -> None:
    created = team.post(
        f"{BASE}/scopes",
        json={"name": "org:read", "displayName": "Org", "description": "d", "bindings": ["admin"]},
    )
    assert created.status_code == 201, created.text
    scope = created.json()
    assert (scope["name"], scope["bindings"], scope["usageCount"]) == ("org:read", ["admin"], 0)
    assert team.get(f"{BASE}/scopes/{scope['id']}").json()["name"] == "org:read"
    assert [s["name"] for s in team.get(f"{BASE}/scopes").json()["list"]] == ["org:read"]
    assert team.post(f"{BASE}/scopes", json={"name": "org:read"}).status_code == 409
    # an API may use it only as shared, and then its bindings are the shared scope's
    local = team.post(f"{BASE}/apis", json=_scoped("A", "/a", "org:read", ["subscriber"]))
    assert local.status_code == 409, local.text
    api = team.post(
        f"{BASE}/apis", json=_scoped("A", "/a", "org:read", ["subscriber"], shared=True), auth=PUB
    )
    assert api.status_code == 201, api.text
    assert api.json()["scopes"][0]["scope"]["bindings"] == ["admin"]
    other = team.post(
        f"{BASE}/apis", json=_scoped("B", "/b", "org:read", [], shared=True), auth=PUB
    )
    assert other.status_code == 201, other.text
    _publish(team, api.json()["id"])
    assert _token_scopes(team, DEV, "org:read") == ["default"]
    assert team.get(f"{BASE}/scopes/{scope['id']}").json()["usageCount"] == 2
    assert team.delete(f"{BASE}/scopes/{scope['id']}").status_code == 409
    unknown = team.post(
        f"{BASE}/apis", json=_scoped("C", "/c", "nope:x", [], shared=True), auth=PUB
    )
    assert unknown.status_code == 400 and "nope:x" in unknown.json()["description"]
    # a shared scope cannot take a name an API already holds
    taken = team.post(f"{BASE}/scopes", json={"name": "own:x", "bindings": []})
    assert taken.status_code == 201
    team.post(f"{BASE}/apis", json=_scoped("D", "/d", "d:x", []))
    assert team.post(f"{BASE}/scopes", json={"name": "d:x"}).status_code == 409
    assert team.delete(f"{BASE}/scopes/{taken.json()['id']}").status_code == 200
    assert team.get(f"{BASE}/scopes/{taken.json()['id']}").status_code == 404
    # only admins manage shared scopes
    assert team.post(f"{BASE}/scopes", json={"name": "p:x"}, auth=PUB).status_code == 403
    assert team.get(f"{BASE}/scopes", auth=PUB).status_code == 200


def test_provider_is_ignored_unless_admin(team: TestClient) -> None:
    """Item 8: a publisher cannot pass an API off as another user's (and so take its scopes)."""
    mine = team.post(f"{BASE}/apis", json=api_body(name="P1", provider="admin"), auth=PUB)
    assert mine.status_code == 201 and mine.json()["provider"] == "pub"
    body = {**api_body(name="P1"), "provider": "admin"}
    changed = team.put(f"{BASE}/apis/{mine.json()['id']}", json=body, auth=PUB)
    assert changed.status_code == 200 and changed.json()["provider"] == "pub"
    given = team.post(f"{BASE}/apis", json=api_body(name="P2", context="/p2", provider="pub"))
    assert given.status_code == 201 and given.json()["provider"] == "pub"
