"""The Publisher console in a real headless Chromium against a real control plane and adapter:
sign in, create a WebSocket API, and the ways that go wrong (wrong password, missing role,
invalid input beside its field, a missing CSRF token, a second create of the same API).

The tests share one stack and one browser and walk one story in file order (the seed path
continues with the API the create test made)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import Browser, trusted_pins
from tests.integration.control_plane_flow import control_plane
from tests.integration.test_control_plane_adapter import adapter, adapter_api_ids, cp_sees_adapter
from tests.procs import free_port, wait_for

pytestmark = pytest.mark.integration

USERS = "admin:admin,publisher1:pub-pass,dev1:dev-pass"
ROLES = "publisher1=publisher;dev1=subscriber"


@dataclass
class Stack:
    cp_port: int
    adapter_rest: int
    pki: Path
    rest: httpx.Client  # the publisher REST API, as admin


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("console")
    rest_port, xds, deploy, cp_port = free_port(), free_port(), free_port(), free_port()
    env = {"WSGATE_CP_USERS": USERS, "WSGATE_CP_ROLES": ROLES}
    with contextlib.ExitStack() as running:
        _, client = running.enter_context(
            control_plane(base / "cp", cp_port, f"127.0.0.1:{deploy}", **env)
        )
        pki = base / "cp" / "pki"
        running.enter_context(adapter(base / "adapter", rest_port, xds, deploy, pki))
        wait_for(lambda: cp_sees_adapter(cp_port), 10, "the control plane to see the adapter")
        yield Stack(cp_port, rest_port, pki, client)


@pytest.fixture(scope="module")
def browser(stack: Stack, browser_factory: type[Browser], screenshots: Path) -> Iterator[Browser]:
    chromium = browser_factory(trusted_pins(stack.pki), screenshots)
    chromium.base = f"https://localhost:{stack.cp_port}"
    try:
        yield chromium
    finally:
        chromium.close()


def test_wrong_password_is_refused_and_keeps_the_username(browser: Browser) -> None:
    browser.open("/publisher")
    assert browser.path.startswith("/publisher/login")
    browser.screenshot("01-sign-in")
    browser.sign_in("publisher", "publisher1", "not-the-password")
    assert "Wrong username or password." in browser.text
    assert browser.value("Username") == "publisher1"
    assert browser.value("Password") == ""
    browser.screenshot("02-wrong-password")


def test_missing_role_is_a_readable_403(browser: Browser) -> None:
    browser.sign_in("publisher", "dev1", "dev-pass")
    assert "Access denied" in browser.text
    assert "lacks the 'publisher' role" in browser.text
    browser.screenshot("03-missing-role")
    browser.sign_out()
    assert browser.path == "/publisher/login"


def test_create_api_shows_errors_beside_fields_and_keeps_values(browser: Browser) -> None:
    browser.sign_in("publisher", "publisher1", "pub-pass")
    assert browser.path == "/publisher/apis"
    browser.click("Create API")
    browser.fill("Name", "EchoWebSocket")
    browser.fill("Context", "/echo websocket")
    browser.fill("Version", "1.0")
    browser.fill("Production endpoint", "http://echo.example")
    browser.click("Create")
    assert "may contain only letters" in browser.error_beside("Context")
    assert "ws:// or wss://" in browser.error_beside("Production endpoint")
    assert browser.error_beside("Name") == ""
    assert browser.value("Name") == "EchoWebSocket"
    assert browser.value("Production endpoint") == "http://echo.example"
    browser.screenshot("04-create-errors")


def test_create_api_then_a_second_create_is_an_error(browser: Browser, stack: Stack) -> None:
    browser.open("/publisher/apis/create")
    browser.fill("Name", "EchoWebSocket")
    browser.fill("Context", "/echowebsocket")
    browser.fill("Version", "1.0")
    browser.fill("Production endpoint", "ws://localhost:8765")
    browser.fill("Sandbox endpoint", "ws://localhost:8766")
    browser.screenshot("05-create-api")
    browser.click("Create")
    assert "API EchoWebSocket 1.0 created." in browser.text
    api_id = browser.path.rsplit("/", 1)[-1]
    browser.screenshot("06-overview")
    found = stack.rest.get(f"/apis/{api_id}")
    assert found.status_code == 200, found.text
    assert found.json()["context"] == "/echowebsocket"
    assert found.json()["provider"] == "publisher1"
    browser.open("/publisher/apis/create")
    browser.fill("Name", "EchoWebSocket")
    browser.fill("Context", "/another")
    browser.fill("Version", "1.0")
    browser.fill("Production endpoint", "ws://localhost:8765")
    browser.click("Create")
    assert "already exists" in browser.error_beside("Name")
    assert browser.value("Context") == "/another"
    assert stack.rest.get("/apis").json()["count"] == 1


def test_form_without_its_csrf_token_is_refused(browser: Browser, stack: Stack) -> None:
    browser.open("/publisher/apis/create")
    browser.fill("Name", "Forged")
    browser.fill("Context", "/forged")
    browser.fill("Version", "1.0")
    browser.fill("Production endpoint", "ws://localhost:8765")
    browser.driver.execute_script(
        "document.querySelector('#create-form input[name=csrf_token]').remove()"
    )
    browser.click("Create")
    assert "Request refused" in browser.text
    browser.screenshot("07-csrf-refused")
    assert stack.rest.get("/apis", params={"query": "Forged"}).json()["count"] == 0


def test_api_list_search(browser: Browser) -> None:
    browser.open("/publisher/apis")
    browser.fill("Search APIs", "echo")
    browser.click("Search")
    assert "EchoWebSocket" in browser.text
    browser.screenshot("08-api-list")
    browser.fill("Search APIs", "nothing-like-this")
    browser.click("Search")
    assert "No API matches" in browser.text


def test_seed_path_topic_gold_publish_revision_deploy(browser: Browser, stack: Stack) -> None:
    """The seed's clicks: the API made above gets a topic, the Gold tier, Save and Publish,
    a revision deployed to Default; the REST API and the adapter then have it."""
    browser.open("/publisher/apis")
    browser.click("EchoWebSocket")
    api_id = browser.path.rsplit("/", 1)[-1]
    browser.click("Topics", within=".side")
    browser.fill("Scope name", "read:notifications")
    browser.fill("Roles", "subscriber")
    browser.click("Add scope")
    assert "Scope read:notifications added." in browser.text
    browser.fill("Topic name", "/notifications")
    browser.fill("URL mapping", "/notifications")
    browser.click("Add topic")
    assert "Topic /notifications added." in browser.text
    browser.screenshot("09-topics")

    browser.click("Business Plans", within=".side")
    browser.driver.find_element("id", "tier-Gold").click()
    browser.screenshot("10-business-plans")
    browser.click("Save and Publish")
    assert "API is PUBLISHED" in browser.text
    assert browser.path.endswith("/lifecycle")
    assert "Current state: PUBLISHED" in browser.text
    browser.screenshot("11-lifecycle")

    browser.click("Deployments", within=".side")
    browser.fill("Revision description", "first")
    browser.click("Create new revision")
    assert "Revision 1 created." in browser.text
    browser.click("Deploy")
    assert "Deployed to Default." in browser.text
    browser.screenshot("12-deployments")

    api = stack.rest.get(f"/apis/{api_id}").json()
    # a new API offers AsyncUnlimited (WSO2's default for streaming APIs); the seed adds Gold
    assert api["lifeCycleStatus"] == "PUBLISHED"
    assert api["policies"] == ["AsyncUnlimited", "Gold"]
    ops = {(op["target"], op["verb"]) for op in api["operations"]}
    assert {("/notifications", "PUBLISH"), ("/notifications", "SUBSCRIBE")} <= ops
    revisions = stack.rest.get(f"/apis/{api_id}/revisions").json()["list"]
    assert [d["name"] for d in revisions[0]["deploymentInfo"]] == ["Default"]
    assert api_id in adapter_api_ids(stack.adapter_rest)
    browser.click("Overview", within=".side")
    steps = browser.driver.find_element("id", "api-steps").text
    assert "to do" not in steps and steps.count("done") == 5, steps
    browser.screenshot("15-overview-ready")

    browser.click("Subscriptions", within=".side")
    assert "No application subscribes to this API yet." in browser.text
    browser.click("Runtime", within=".side")
    browser.screenshot("13-runtime")
    browser.click("AsyncAPI Definition", within=".side")
    browser.click("Validate")
    assert "The definition is valid" in browser.text
    browser.screenshot("14-asyncapi")


def test_pages_log_no_errors_and_load_only_own_assets(browser: Browser, stack: Stack) -> None:
    """Every Publisher page renders under its CSP without a violation (no inline script or
    style) and fetches nothing from another origin."""
    made = stack.rest.post("/apis", json={"name": "CspCheck", "context": "/csp", "version": "1"})
    assert made.status_code == 201, made.text
    api_id = made.json()["id"]
    browser.sign_in("publisher", "publisher1", "pub-pass")
    browser.console_errors()  # drop what earlier tests left
    pages = ["/publisher/apis", "/publisher/apis/create", "/publisher/apis/import"]
    pages += [f"/publisher/apis/{api_id}"]
    pages += [
        f"/publisher/apis/{api_id}/{sub}"
        for sub in (
            "topics",
            "endpoints",
            "business-plans",
            "runtime",
            "asyncapi",
            "lifecycle",
            "deployments",
            "subscriptions",
        )
    ]
    for path in pages:
        browser.open(path)
        assert browser.path == path
        assert browser.console_errors() == [], path
        assert browser.foreign_resources() == [], path
        stylesheet = browser.driver.execute_script(
            "return getComputedStyle(document.querySelector('.topbar')).display"
        )
        assert stylesheet == "flex", f"{path}: console.css did not apply"
