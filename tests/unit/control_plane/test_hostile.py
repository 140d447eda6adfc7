"""Issue 12: hostile input and hostile tenants against an in-process control plane."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.hostile_docs import big_asyncapi, yaml_bomb
from tests.unit.control_plane.helpers import (
    BASE,
    DEVPORTAL,
    api_body,
    create_application,
    published_api,
    subscribe,
)


def _import(client: TestClient, document: bytes, context: str = "/bomb") -> object:
    return client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", document, "application/yaml")},
        data={"additionalProperties": f'{{"context": "{context}"}}'},
    )


def test_yaml_bomb_import_is_a_short_400_and_stores_nothing(client: TestClient) -> None:
    started = time.monotonic()
    answer = _import(client, yaml_bomb())
    assert time.monotonic() - started < 2
    assert answer.status_code == 400, answer.text[:300]  # type: ignore[attr-defined]
    assert len(answer.content) < 400  # type: ignore[attr-defined]
    assert "alias" in answer.json()["description"]  # type: ignore[attr-defined]
    assert client.get(f"{BASE}/apis").json()["count"] == 0


def test_small_alias_variant_is_not_stored(client: TestClient) -> None:
    document = yaml_bomb(levels=6)  # ~10**6 leaves: "stored as a 7 MB authType" before
    answer = _import(client, document)
    assert answer.status_code == 400
    assert client.get(f"{BASE}/apis").json()["count"] == 0


def test_huge_document_is_413_naming_the_limit(client: TestClient) -> None:
    started = time.monotonic()
    answer = _import(client, big_asyncapi())
    assert time.monotonic() - started < 5
    assert answer.status_code == 413, answer.text[:300]  # type: ignore[attr-defined]
    assert "WSGATE_CP_DOCUMENT_MAX_NODES" in answer.json()["description"]  # type: ignore[attr-defined]


def test_long_values_are_not_echoed(client: TestClient) -> None:
    version = "9" * 100_000
    document = f"asyncapi: '{version}'\ninfo: {{title: A, version: '1'}}\n".encode()
    answer = _import(client, document)
    assert answer.status_code == 400
    assert len(answer.content) < 400  # type: ignore[attr-defined]


# --- item 4: a block sticks to the application-API pair ------------------------------------------


def _block(client: TestClient, sub_id: str, state: str = "BLOCKED") -> None:
    answer = client.post(
        f"{BASE}/subscriptions/block-subscription",
        params={"subscriptionId": sub_id, "blockState": state},
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("state", ["BLOCKED", "PROD_ONLY_BLOCKED"])
def test_resubscribing_does_not_undo_a_block(client: TestClient, state: str) -> None:
    api_id = published_api(client)
    app_id = create_application(client)["applicationId"]
    sub_id = subscribe(client, app_id, api_id).json()["subscriptionId"]
    _block(client, sub_id, state)
    assert client.delete(f"{DEVPORTAL}/subscriptions/{sub_id}").status_code == 200
    again = subscribe(client, app_id, api_id)
    assert again.status_code == 201, again.text
    assert again.json()["status"] == state
    new_id = again.json()["subscriptionId"]
    listed = client.get(f"{BASE}/subscriptions", params={"apiId": api_id}).json()["list"]
    assert [(s["subscriptionId"], s["subscriptionStatus"]) for s in listed] == [(new_id, state)]
    # the publisher unblocks: now it is gone for good
    unblocked = client.post(
        f"{BASE}/subscriptions/unblock-subscription", params={"subscriptionId": new_id}
    )
    assert unblocked.json()["subscriptionStatus"] == "UNBLOCKED"
    assert client.delete(f"{DEVPORTAL}/subscriptions/{new_id}").status_code == 200
    assert subscribe(client, app_id, api_id).json()["status"] == "UNBLOCKED"


def test_a_block_does_not_follow_to_other_apis_or_apps(client: TestClient) -> None:
    api_id = published_api(client)
    other_api = published_api(client, name="Other", context="/other")
    app_id = create_application(client)["applicationId"]
    other_app = create_application(client, name="App2")["applicationId"]
    sub_id = subscribe(client, app_id, api_id).json()["subscriptionId"]
    _block(client, sub_id)
    client.delete(f"{DEVPORTAL}/subscriptions/{sub_id}")
    assert subscribe(client, app_id, other_api).json()["status"] == "UNBLOCKED"
    assert subscribe(client, other_app, api_id).json()["status"] == "UNBLOCKED"


# --- item 6: backoff on Basic auth -------------------------------------------------------------


def test_wrong_passwords_meet_a_429_with_retry_after_and_the_user_gets_back_in(
    settings: ControlPlaneSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(
        update={
            "cp_users": "admin:admin,dev:devsecret",
            "auth_backoff_free_failures": 3,
            "auth_backoff_base_delay": 0.3,
            "auth_backoff_max_delay": 0.6,
        }
    )
    with TestClient(create_app(settings)) as client:
        url = f"{DEVPORTAL}/applications"
        statuses = [client.get(url, auth=("dev", "guess")).status_code for _ in range(6)]
        assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
        held = client.get(url, auth=("dev", "devsecret"))  # even the right password waits
        assert held.status_code == 429
        assert held.headers["retry-after"] == "1"
        body = held.json()
        assert body["code"] == 429 and "retry after" in body["description"]
        # another user from the same address is held back too (the address key)
        assert client.get(url, auth=("admin", "nope")).status_code == 429
        time.sleep(0.7)  # never longer than the max delay
        assert client.get(url, auth=("dev", "devsecret")).status_code == 200
    assert "sign-in backoff" in caplog.text and "guess" not in caplog.text
    assert "devsecret" not in caplog.text


# --- item 8: small ones ---------------------------------------------------------------------------


def test_sqlite_file_is_owner_only(tmp_path: Path) -> None:
    from control_plane.db import make_engine, migrate

    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    for path in (tmp_path / "new" / "cp.db", old):
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for extra in path.parent.glob(path.name + "-*"):
            assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/apis", {"offset": "99999999999999999999"}),
        ("/apis", {"offset": "1000001"}),
        ("/subscriptions", {"offset": "99999999999999999999"}),
        ("/apis", {"query": "x" * 257}),
    ],
)
def test_huge_offsets_and_queries_are_400(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    answer = client.get(f"{BASE}{path}", params=params)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"code", "message", "description"}
    assert "offset" in answer.json()["description"] or "query" in answer.json()["description"]


def test_devportal_huge_offset_is_400(client: TestClient) -> None:
    for path in ("/apis", "/applications", "/subscriptions"):
        answer = client.get(f"{DEVPORTAL}{path}", params={"offset": "99999999999999999999"})
        assert answer.status_code == 400, (path, answer.text)


def test_like_wildcards_match_themselves(client: TestClient) -> None:
    published_api(client)
    published_api(client, name="Other", context="/other")
    create_application(client, name="App")
    for text in ("%", "_", "name:%", "E_ho"):
        assert client.get(f"{BASE}/apis", params={"query": text}).json()["count"] == 0, text
        assert client.get(f"{DEVPORTAL}/apis", params={"query": text}).json()["count"] == 0
    assert client.get(f"{DEVPORTAL}/applications", params={"query": "%"}).json()["count"] == 0
    assert client.get(f"{BASE}/apis", params={"query": "ech"}).json()["count"] == 1


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123_x.y", True), ("../../evil<script>", False), ("a" * 65, False), ("", False)],
)
def test_request_id_is_kept_only_when_safe(client: TestClient, given: str, kept: bool) -> None:
    answer = client.get("/health", headers={"X-Request-ID": given} if given else {})
    returned = answer.headers["x-request-id"]
    assert (returned == given) is kept
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", returned)


# --- item 5: bounded tenant data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "limit"),
    [
        ({"attributes": {f"k{i}": "v" for i in range(100_000)}}, "50"),
        ({"attributes": {"k": "v" * 5000}}, "1024"),
        ({"attributes": {"k" * 300: "v"}}, "100"),
        ({"groups": ["g"] * 500}, "20"),
        ({"description": "d" * 5000}, "1024"),
        ({"name": "n" * 500}, "100"),
    ],
    ids=["attribute-count", "attribute-value", "attribute-key", "groups", "description", "name"],
)
def test_application_fields_are_bounded(
    client: TestClient, changes: dict[str, object], limit: str
) -> None:
    body = {"name": "App", "throttlingPolicy": "Unlimited", **changes}
    answer = client.post(f"{DEVPORTAL}/applications", json=body)
    assert answer.status_code == 400, answer.text[:300]
    assert limit in answer.json()["description"]
    assert len(answer.content) < 2000


def test_applications_per_user_are_bounded(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"cp_max_applications_per_user": 3})
    with TestClient(create_app(settings)) as client:
        client.auth = ("admin", "admin")
        for i in range(3):
            create_application(client, name=f"A{i}")
        answer = client.post(
            f"{DEVPORTAL}/applications", json={"name": "A3", "throttlingPolicy": "Unlimited"}
        )
        assert answer.status_code == 400, answer.text
        assert "3" in answer.json()["description"]
        assert "WSGATE_CP_MAX_APPLICATIONS_PER_USER" in answer.json()["description"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"description": "d" * 20_000}, "description"),
        (
            {"operations": [{"target": "/t", "verb": "PUBLISH", "authType": "A" * 70_000}]},
            "authType",
        ),
        (
            {"operations": [{"target": f"/t{i}", "verb": "PUBLISH"} for i in range(3000)]},
            "operations",
        ),
        ({"policies": [f"P{i}" for i in range(500)]}, "policies"),
        ({"scopes": [{"scope": {"name": "s", "description": "d" * 5000}}]}, "description"),
        (
            {"scopes": [{"scope": {"name": "s", "bindings": [f"r{i}" for i in range(500)]}}]},
            "bindings",
        ),
        ({"endpointConfig": {"production_endpoints": {"url": "ws://h/" + "p" * 5000}}}, "url"),
    ],
    ids=["description", "authType", "operations", "policies", "scope-desc", "bindings", "url"],
)
def test_api_fields_are_bounded(client: TestClient, changes: dict[str, object], field: str) -> None:
    answer = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert answer.status_code == 400, answer.text[:300]
    assert field in answer.json()["description"]
    assert len(answer.content) < 2000


def test_oversized_request_body_is_413_before_parsing(client: TestClient) -> None:
    body = b'{"name": "' + b"x" * (7 * 1024 * 1024) + b'"}'
    answer = client.post(
        f"{DEVPORTAL}/applications", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.text[:300]
    assert "WSGATE_CP_MAX_REQUEST_BYTES" in answer.json()["description"]


def test_wrong_client_secrets_are_held_back_on_oauth2_token(
    settings: ControlPlaneSettings,
) -> None:
    settings = settings.model_copy(update={"auth_backoff_free_failures": 2})
    with TestClient(create_app(settings)) as client:
        client.auth = ("admin", "admin")
        app_id = create_application(client)["applicationId"]
        keys = client.post(
            f"{DEVPORTAL}/applications/{app_id}/generate-keys",
            json={"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]},
        ).json()
        form = {"grant_type": "client_credentials"}
        wrong = (keys["consumerKey"], "guess")
        codes = [client.post("/oauth2/token", data=form, auth=wrong).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        held = client.post(
            "/oauth2/token", data=form, auth=(keys["consumerKey"], keys["consumerSecret"])
        )
        assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
        assert held.json()["error"] == "slow_down"
