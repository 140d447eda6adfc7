"""Every Publisher page over the same service layer as the REST API: what a page changes, the
REST API shows (and the fake gRPC adapter receives, for deployments)."""

from __future__ import annotations

import html
import io
import re
import time
import zipfile
from typing import Any

import grpc
import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import FakeAdapter
from tests.unit.control_plane.web.helpers import csrf_of, field_errors

REST = "/api/am/publisher/v4"
DEVPORTAL = "/api/am/devportal/v3"
ADMIN = ("admin", "admin")


def post(client: TestClient, page: str, to: str, /, **data: Any) -> httpx.Response:
    """Submit a form found on ``page`` (its CSRF token included) to ``to``."""
    token = csrf_of(client.get(page).text)
    return client.post(to, data={"csrf_token": token, **data})


def create(client: TestClient, name: str = "EchoWebSocket", context: str = "/echo") -> str:
    answer = post(
        client,
        "/publisher/apis/create",
        "/publisher/apis/create",
        name=name,
        context=context,
        version="1.0",
        production_endpoint="ws://localhost:8765",
    )
    assert answer.status_code == 200, answer.text
    return str(answer.url).rsplit("/", 1)[-1]


def rest_api(client: TestClient, api_id: str) -> dict[str, Any]:
    answer = client.get(f"{REST}/apis/{api_id}", auth=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def flash(page: httpx.Response) -> str:
    found = re.findall(r'<p class="flash flash-\w+" role="status">(.*?)</p>', page.text)
    return " ".join(found)


def test_topics_and_scopes(publisher_deploying: tuple[TestClient, FakeAdapter]) -> None:
    client, _ = publisher_deploying
    api_id = create(client)
    page = f"/publisher/apis/{api_id}/topics"
    assert "<code>/*</code>" in client.get(page).text  # WSO2's default wildcard topic
    scope = post(
        client,
        page,
        f"/publisher/apis/{api_id}/scopes",
        scope_name="read:notifications",
        scope_description="read",
        scope_roles="subscriber, admin",
    )
    assert "Scope read:notifications added." in flash(scope)
    added = post(
        client,
        page,
        f"/publisher/apis/{api_id}/topics",
        target="/notifications",
        verb="BOTH",
        auth_type="Any",
        uri_mapping="/notify",
        scopes="read:notifications",
    )
    assert "Topic /notifications added." in flash(added)
    body = rest_api(client, api_id)
    ops = {(op["target"], op["verb"]): op for op in body["operations"]}
    assert ops[("/notifications", "PUBLISH")]["scopes"] == ["read:notifications"]
    assert ops[("/notifications", "SUBSCRIBE")]["uriMapping"] == "/notify"
    assert body["scopes"][0]["scope"]["bindings"] == ["subscriber", "admin"]
    twice = post(
        client, page, f"/publisher/apis/{api_id}/topics", target="/notifications", verb="PUBLISH"
    )
    assert twice.status_code == 400 and "listed twice" in field_errors(twice.text)["target"]
    bad = post(client, page, f"/publisher/apis/{api_id}/topics", target="/a b", verb="PUBLISH")
    assert "not URL-safe" in field_errors(bad.text)["target"]
    assert 'value="/a b"' in bad.text
    in_use = post(
        client, page, f"/publisher/apis/{api_id}/scopes/remove", scope_name="read:notifications"
    )
    assert "is used by" in flash(in_use)
    index = [(op["target"], op["verb"]) for op in body["operations"]].index(
        ("/notifications", "PUBLISH")
    )
    edited = post(
        client,
        page,
        f"/publisher/apis/{api_id}/topics/update",
        index=str(index),
        auth_type="None",
        uri_mapping="",
    )
    assert "saved" in flash(edited)
    op = rest_api(client, api_id)["operations"][index]
    assert (op["authType"], op["scopes"], op.get("uriMapping")) == ("None", [], None)
    removed = post(client, page, f"/publisher/apis/{api_id}/topics/remove", index=str(index))
    assert "removed" in flash(removed)
    left = [(op["target"], op["verb"]) for op in rest_api(client, api_id)["operations"]]
    assert ("/notifications", "PUBLISH") not in left and ("/notifications", "SUBSCRIBE") in left


def test_endpoints_plans_runtime(publisher_deploying: tuple[TestClient, FakeAdapter]) -> None:
    client, _ = publisher_deploying
    api_id = create(client)
    page = f"/publisher/apis/{api_id}/endpoints"
    bad = post(client, page, page, production_endpoint="http://x", sandbox_endpoint="")
    assert "ws:// or wss://" in field_errors(bad.text)["production_endpoint"]
    post(client, page, page, production_endpoint="wss://a:1", sandbox_endpoint="ws://b:2")
    config = rest_api(client, api_id)["endpointConfig"]
    assert config["production_endpoints"]["url"] == "wss://a:1"
    assert config["sandbox_endpoints"]["url"] == "ws://b:2"

    plans = f"/publisher/apis/{api_id}/business-plans"
    assert 'id="tier-Gold"' in client.get(plans).text
    none = post(client, plans, plans)
    assert none.status_code == 400 and "at least one" in field_errors(none.text)["tiers"]
    saved = post(client, plans, plans, tiers=["Gold", "Unlimited"])
    assert "Business plans saved." in flash(saved)
    assert rest_api(client, api_id)["policies"] == ["Gold", "Unlimited"]
    assert rest_api(client, api_id)["lifeCycleStatus"] == "CREATED"

    runtime = f"/publisher/apis/{api_id}/runtime"
    post(client, runtime, runtime, api_rate_limit="10KPerMin")  # security unchecked: off
    body = rest_api(client, api_id)
    assert body["apiThrottlingPolicy"] == "10KPerMin"
    assert {op["authType"] for op in body["operations"]} == {"None"}
    post(client, runtime, runtime, security="on", api_rate_limit="")
    steps = client.get(f"/publisher/apis/{api_id}").text
    done = re.findall(r'<li class="done"><a href="[^"]+">([^<]+)</a>', steps)
    assert done == ["Endpoints", "Topics", "Business plans"]
    body = rest_api(client, api_id)
    assert body["apiThrottlingPolicy"] is None
    assert {op["authType"] for op in body["operations"]} == {"Any"}
    unknown = post(client, runtime, runtime, security="on", api_rate_limit="NoSuchTier")
    assert unknown.status_code == 400 and "NoSuchTier" in unknown.text


def test_save_and_publish_then_lifecycle_buttons(
    publisher_deploying: tuple[TestClient, FakeAdapter],
) -> None:
    client, _ = publisher_deploying
    api_id = create(client)
    plans = f"/publisher/apis/{api_id}/business-plans"
    assert "Save and Publish" in client.get(plans).text
    published = post(client, plans, plans, tiers=["Gold"], publish="1")
    assert "API is PUBLISHED" in flash(published)
    assert rest_api(client, api_id)["lifeCycleStatus"] == "PUBLISHED"
    page = client.get(f"/publisher/apis/{api_id}/lifecycle").text
    buttons = re.findall(r'<button type="submit" class="[^"]*">([^<]+)</button>', page)
    assert {"Block", "Deprecate", "Demote to Created"} <= set(buttons)
    lifecycle = f"/publisher/apis/{api_id}/lifecycle"
    blocked = post(client, lifecycle, lifecycle, action="Block")
    assert "now BLOCKED" in flash(blocked)
    refused = post(client, lifecycle, lifecycle, action="Retire")
    assert "cannot Retire" in flash(refused)
    assert rest_api(client, api_id)["lifeCycleStatus"] == "BLOCKED"


def test_revisions_deploy_undeploy_restore(
    publisher_deploying: tuple[TestClient, FakeAdapter],
) -> None:
    client, adapter = publisher_deploying
    api_id = create(client)
    page = f"/publisher/apis/{api_id}/deployments"
    made = post(client, page, f"/publisher/apis/{api_id}/revisions", description="first")
    assert "Revision 1 created." in flash(made)
    revisions = client.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["list"]
    revision = revisions[0]["id"]
    deployed = post(
        client,
        page,
        f"/publisher/apis/{api_id}/deploy",
        revision_id=revision,
        environment="Default",
        vhost="localhost",
    )
    assert "Deployed to Default." in flash(deployed)
    assert [api.id for api in adapter.deployed] == [api_id]
    info = client.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["list"][0]
    assert [d["name"] for d in info["deploymentInfo"]] == ["Default"]
    nowhere = post(
        client,
        page,
        f"/publisher/apis/{api_id}/deploy",
        revision_id=revision,
        environment="Nowhere",
    )
    assert nowhere.status_code == 200 and "Nowhere" in flash(nowhere)
    # change the working copy, then restore the revision over it
    endpoints = f"/publisher/apis/{api_id}/endpoints"
    post(client, endpoints, endpoints, production_endpoint="ws://changed:1")
    restored = post(client, page, f"/publisher/apis/{api_id}/restore", revision_id=revision)
    assert "restored" in flash(restored)
    url = rest_api(client, api_id)["endpointConfig"]["production_endpoints"]["url"]
    assert url == "ws://localhost:8765"
    assert api_id in adapter.live
    undeployed = post(
        client,
        page,
        f"/publisher/apis/{api_id}/undeploy",
        revision_id=revision,
        environment="Default",
        vhost="localhost",
    )
    assert "Undeployed from Default." in flash(undeployed)
    assert api_id not in adapter.live  # PutApi with no definitions took it off
    deleted = post(client, page, f"/publisher/apis/{api_id}/revisions/delete", revision_id=revision)
    assert "Revision deleted." in flash(deleted)
    assert client.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["count"] == 0


def test_subscriptions_block_and_unblock(
    publisher_deploying: tuple[TestClient, FakeAdapter],
) -> None:
    client, _ = publisher_deploying
    api_id = create(client)
    plans = f"/publisher/apis/{api_id}/business-plans"
    post(client, plans, plans, tiers=["Gold"], publish="1")
    dev = ("dev1", "dev-pass")
    app = client.post(f"{DEVPORTAL}/applications", json={"name": "DefaultApplication"}, auth=dev)
    assert app.status_code == 201, app.text
    sub = client.post(
        f"{DEVPORTAL}/subscriptions",
        json={
            "applicationId": app.json()["applicationId"],
            "apiId": api_id,
            "throttlingPolicy": "Gold",
        },
        auth=dev,
    )
    assert sub.status_code == 201, sub.text
    sub_id = sub.json()["subscriptionId"]
    page = f"/publisher/apis/{api_id}/subscriptions"
    listing = client.get(page).text
    assert "DefaultApplication" in listing and "Block production only" in listing

    def state() -> str:
        rows = client.get(f"{REST}/subscriptions", params={"apiId": api_id}, auth=ADMIN).json()
        return str(rows["list"][0]["subscriptionStatus"])

    for action, expected in (
        ("block-production", "PROD_ONLY_BLOCKED"),
        ("block", "BLOCKED"),
        ("unblock", "UNBLOCKED"),
    ):
        answer = post(client, page, page, subscription_id=sub_id, action=action)
        assert f"is now {expected}" in flash(answer)
        assert state() == expected
    other = create(client, "Other", "/other")
    wrong = post(
        client,
        page,
        f"/publisher/apis/{other}/subscriptions",
        subscription_id=sub_id,
        action="block",
    )
    assert "Not a subscription of this API." in flash(wrong)
    assert state() == "UNBLOCKED"


def test_download_api_is_the_export_zip(publisher_web: TestClient) -> None:
    api_id = create(publisher_web)
    page = publisher_web.get(f"/publisher/apis/{api_id}").text
    assert "Download API" in page
    download = publisher_web.get(f"/publisher/apis/{api_id}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    rest = publisher_web.get(f"{REST}/apis/export", params={"apiId": api_id}, auth=ADMIN)
    names = zipfile.ZipFile(io.BytesIO(download.content)).namelist()
    assert names == zipfile.ZipFile(io.BytesIO(rest.content)).namelist()
    assert "EchoWebSocket-1.0/Definitions/asyncapi.yaml" in names


ASYNCAPI = """
asyncapi: 2.0.0
info: {title: Prices, version: "2.0"}
servers:
  production: {url: "ws://prices.example:80", protocol: ws}
channels:
  /ticks/{symbol}:
    parameters: {symbol: {schema: {type: string}}}
    subscribe: {x-auth-type: Any, x-scopes: []}
"""


def test_import_asyncapi_file(publisher_web: TestClient) -> None:
    page = "/publisher/apis/import"
    token = csrf_of(publisher_web.get(page).text)
    no_file = publisher_web.post(page, data={"csrf_token": token, "context": "/prices"})
    assert no_file.status_code == 400 and "Choose an AsyncAPI" in field_errors(no_file.text)["file"]
    broken = publisher_web.post(
        page,
        data={"csrf_token": token, "context": "/prices"},
        files={"file": ("x.yaml", b"asyncapi: [", "application/yaml")},
    )
    assert "not valid YAML" in field_errors(broken.text)["file"]
    made = publisher_web.post(
        page,
        data={"csrf_token": token, "context": "/prices"},
        files={"file": ("prices.yaml", ASYNCAPI.encode(), "application/yaml")},
    )
    assert made.status_code == 200 and "API Prices 2.0 imported." in flash(made)
    listed = publisher_web.get(f"{REST}/apis", params={"query": "Prices"}, auth=ADMIN).json()
    api = rest_api(publisher_web, listed["list"][0]["id"])
    assert api["context"] == "/prices"
    assert [op["target"] for op in api["operations"]] == ["/ticks/{symbol}"]
    again = publisher_web.post(
        page,
        data={"csrf_token": token, "context": "/prices2"},
        files={"file": ("prices.yaml", ASYNCAPI.encode(), "application/yaml")},
    )
    assert again.status_code == 409 and "already exists" in field_errors(again.text)["name"]


def test_asyncapi_definition_view_validate_save(publisher_web: TestClient) -> None:
    api_id = create(publisher_web)
    page = f"/publisher/apis/{api_id}/asyncapi"
    shown = publisher_web.get(page).text
    text = re.search(
        r'<textarea id="f-definition" name="definition" rows="24">(.*?)</textarea>', shown, re.S
    ).group(1)  # type: ignore[union-attr]
    document = yaml.safe_load(html.unescape(text))
    assert document["info"]["title"] == "EchoWebSocket" and "/*" in document["channels"]
    document["channels"]["/rooms/{room}"] = {"publish": {"x-auth-type": "Any"}}
    edited = yaml.safe_dump(document)
    checked = post(publisher_web, page, page, definition=edited, action="validate")
    assert "The definition is valid: 3 topic operation(s)" in checked.text
    assert len(rest_api(publisher_web, api_id)["operations"]) == 2  # validate did not save
    broken = post(publisher_web, page, page, definition="asyncapi: 3.0.0\n", action="save")
    assert broken.status_code == 400 and "not 2.x" in field_errors(broken.text)["definition"]
    assert "asyncapi: 3.0.0" in broken.text  # the typed text is kept
    saved = post(publisher_web, page, page, definition=edited, action="save")
    assert "AsyncAPI definition saved." in flash(saved)
    targets = {op["target"] for op in rest_api(publisher_web, api_id)["operations"]}
    assert targets == {"/*", "/rooms/{room}"}
    assert rest_api(publisher_web, api_id)["name"] == "EchoWebSocket"


def test_unknown_api_is_a_404_page(publisher_web: TestClient) -> None:
    for path in (
        "/publisher/apis/nope",
        "/publisher/apis/3fa85f64-5717-4562-b3fc-2c963f66afa6/topics",
    ):
        answer = publisher_web.get(path)
        assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]
        assert "does not exist" in answer.text


def test_delete_api_refused_while_subscribed(
    publisher_deploying: tuple[TestClient, FakeAdapter],
) -> None:
    client, _ = publisher_deploying
    api_id = create(client)
    page = f"/publisher/apis/{api_id}"
    plans = f"{page}/business-plans"
    post(client, plans, plans, tiers=["Gold"], publish="1")
    dev = ("dev1", "dev-pass")
    app = client.post(f"{DEVPORTAL}/applications", json={"name": "App"}, auth=dev).json()
    sub = client.post(
        f"{DEVPORTAL}/subscriptions",
        json={"applicationId": app["applicationId"], "apiId": api_id, "throttlingPolicy": "Gold"},
        auth=dev,
    )
    assert sub.status_code == 201, sub.text
    assert "must be removed" in client.get(f"{page}/delete").text
    refused = post(client, page, f"{page}/delete")
    assert "subscription(s)" in flash(refused)
    assert client.get(f"{REST}/apis/{api_id}", auth=ADMIN).status_code == 200
    client.delete(f"{DEVPORTAL}/subscriptions/{sub.json()['subscriptionId']}", auth=dev)
    confirm = client.get(f"{page}/delete").text
    assert "Delete <strong>EchoWebSocket 1.0</strong>?" in confirm
    deleted = post(client, f"{page}/delete", f"{page}/delete")
    assert "API EchoWebSocket 1.0 deleted." in flash(deleted)
    assert client.get(f"{REST}/apis/{api_id}", auth=ADMIN).status_code == 404


BAD_FORMS = [
    ("topics", {"target": "/" + "x" * 3000}, 400, "at most 2048 characters"),
    ("topics/update", {"index": "abc"}, 400, "index: Input should be a valid integer"),
    ("topics/remove", {"index": "-1"}, 400, "greater than or equal to 0"),
    ("topics/update", {"index": "99"}, 200, "That topic no longer exists."),
    ("deploy", {"revision_id": "x", "environment": "bad name!"}, 200, "not a valid gateway name"),
    ("deploy", {"revision_id": "zzz"}, 200, "revision zzz does not exist"),
    ("subscriptions", {"subscription_id": "x", "action": "block"}, 404, "does not exist"),
    ("subscriptions", {"subscription_id": "x", "action": "explode"}, 200, "Unknown action"),
    ("lifecycle", {"action": "Explode"}, 200, "is not one of"),
    ("business-plans", {"tiers": ["Nope"]}, 400, "not a known subscription throttling policy"),
    ("scopes", {"scope_name": "bad scope"}, 400, "should match pattern"),
    ("revisions", {"description": "x" * 300}, 400, "at most 255 characters"),
    ("asyncapi", {"definition": "asyncapi: 2.0.0\ninfo: 5"}, 400, "info: must be a mapping"),
    ("asyncapi", {"definition": "- 1"}, 400, "must be a YAML or JSON mapping"),
]


@pytest.mark.parametrize(("path", "data", "status", "message"), BAD_FORMS)
def test_bad_forms_are_explained_never_a_crash(
    publisher_web: TestClient, path: str, data: dict[str, Any], status: int, message: str
) -> None:
    api_id = create(publisher_web)
    answer = post(publisher_web, "/publisher/apis", f"/publisher/apis/{api_id}/{path}", **data)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert message in html.unescape(answer.text)


def test_deploy_while_the_adapter_is_down_says_so(publisher_web: TestClient) -> None:
    api_id = create(publisher_web)
    page = f"/publisher/apis/{api_id}/deployments"
    post(publisher_web, page, f"/publisher/apis/{api_id}/revisions")
    revision = publisher_web.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["list"][0]
    deadline = time.monotonic() + 10
    while publisher_web.get("/ready").json()["adapter"] != "unreachable":
        assert time.monotonic() < deadline, "the control plane never noticed the adapter"
        time.sleep(0.05)
    answer = post(
        publisher_web,
        page,
        f"/publisher/apis/{api_id}/deploy",
        revision_id=revision["id"],
        environment="Default",
    )
    assert "Deployed to Default. The adapter is unreachable now" in flash(answer)


def test_deployments_page_says_deployed_or_pending_as_the_rest_api_does(
    publisher_deploying: tuple[TestClient, FakeAdapter],
) -> None:
    client, adapter = publisher_deploying
    api_id = create(client)
    page = f"/publisher/apis/{api_id}/deployments"
    post(client, page, f"/publisher/apis/{api_id}/revisions", description="first")
    revision = client.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["list"][0]["id"]
    deploy = {"revision_id": revision, "environment": "Default", "vhost": "localhost"}
    post(client, page, f"/publisher/apis/{api_id}/deploy", **deploy)
    live = client.get(page)
    assert ">Deployed</span>" in live.text and ">Pending</span>" not in live.text

    # revision 2 is validated but the adapter refuses to run it: saved, still on its way (the
    # adapter keeps running revision 1 there)
    post(client, page, f"/publisher/apis/{api_id}/revisions", description="second")
    listed = client.get(f"{REST}/apis/{api_id}/revisions", auth=ADMIN).json()["list"]
    second = next(r["id"] for r in listed if r["id"] != revision)
    adapter.refuse_changes = grpc.StatusCode.ALREADY_EXISTS
    post(client, page, f"/publisher/apis/{api_id}/deploy", **{**deploy, "revision_id": second})
    rest = client.get(f"{REST}/apis/{api_id}/revisions/{second}", auth=ADMIN).json()
    assert rest["deploymentInfo"][0]["deploymentStatus"] == "PENDING"
    assert ">Pending</span>" in client.get(page).text
