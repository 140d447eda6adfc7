"""The first seed document, end to end over the API Manager REST APIs and real processes.

A publisher creates the EchoWebSocket API (tier AsyncGold, a topic scope bound to the
``subscriber`` role), publishes it, makes a revision and deploys it to Default/localhost; a
developer creates an application, subscribes it on AsyncGold, generates production keys, gets a
token from ``POST /oauth2/token`` and talks to the backend through the router with wscat and the
``websockets`` client. Also measured: deploy-revision -> first echo, subscribe -> first allowed
handshake; and the export zip deploys with ``wsgate mg deploy api``.
"""

from __future__ import annotations

import asyncio
import io
import time
import zipfile

import httpx
import jwt
import pytest
import yaml

from tests.integration.apim_flow import (
    DEVPORTAL,
    PUBLISHER,
    SCOPE,
    apim,
    denial,
    expect,
    wait_status,
    wait_status_sync,
    ws_api_body,
)
from tests.integration.conftest import Stack, handshake, run_wscat
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

NOTIFICATIONS = "/echowebsocket/1.0.0/notifications"


def test_seed_story_create_publish_deploy_subscribe_gold_keys_token_wscat_echo(
    stack: Stack,
) -> None:
    """The seed, step by step as a platform team would call it, timing every step."""
    steps: list[tuple[str, float]] = []
    began = time.monotonic()

    def step(name: str) -> None:
        steps.append((name, time.monotonic() - began))

    with apim(stack) as am:
        body = ws_api_body("EchoWebSocket", "/echowebsocket", stack.ports.echo)
        api_id = am.create_api(body)
        step("create API")
        fetched = expect(am.http.get(f"{PUBLISHER}/apis/{api_id}"), 200)
        assert fetched["lifeCycleStatus"] == "CREATED", fetched
        assert fetched["policies"] == ["AsyncGold"], fetched
        am.publish(api_id)
        step("change-lifecycle Publish")
        revision_id = am.revision(api_id)
        step("revision")
        deployed = expect(am.deploy_revision(api_id, revision_id), 200, 201)
        assert [d["name"] for d in deployed] == ["Default"], deployed
        step("deploy-revision Default/localhost")

        app_id = am.create_application("DefaultApplication")
        step("devportal create application")
        subscription_id = am.subscribe(app_id, api_id, "AsyncGold")
        step("subscribe AsyncGold")
        subscription = expect(am.http.get(f"{DEVPORTAL}/subscriptions/{subscription_id}"), 200)
        assert subscription["throttlingPolicy"] == "AsyncGold", subscription
        assert subscription["status"] == "UNBLOCKED", subscription
        keys = am.generate_keys(app_id, "PRODUCTION")
        step("generate-keys PRODUCTION")
        issued = expect(am.token_answer(keys, SCOPE), 200)
        step("POST /oauth2/token")

    assert issued["token_type"].lower() == "bearer", issued
    assert SCOPE in issued["scope"].split(), issued
    assert 0 < int(issued["expires_in"]) <= 24 * 3600, issued
    token = issued["access_token"]
    _check_token(stack, token, app_id, "PRODUCTION")

    url = stack.ws + NOTIFICATIONS
    asyncio.run(wait_status(url, token, 101, limit=5))
    step("first echo (websockets)")
    header = f"Authorization:Bearer {token}"
    plain = run_wscat(["-c", url, "-H", header, "-x", "hello gold", "-w", "1"])
    assert plain.returncode == 0, plain.stderr
    assert "hello gold" in plain.stdout.splitlines(), (plain.stdout, plain.stderr)
    secure = run_wscat(
        ["-n", "-c", stack.wss + NOTIFICATIONS, "-H", header, "-x", "hello tls", "-w", "1"]
    )
    assert secure.returncode == 0, secure.stderr
    assert "hello tls" in secure.stdout.splitlines(), (secure.stdout, secure.stderr)
    step("wscat echo over ws and wss")
    room = handshake(stack.ws + "/echowebsocket/1.0.0/rooms/lobby", token, b"\x00bin")
    assert room.echoed == b"\x00bin", room
    print("\nseed story over REST (seconds since start):")
    for name, at in steps:
        print(f"  {at:7.3f}  {name}")


def _check_token(stack: Stack, token: str, app_id: str, key_type: str) -> None:
    """RS256, verifiable with the control plane's JWKS, with the claims the issue lists."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256", header
    jwks = httpx.get(f"{stack.cp_url}/oauth2/jwks", verify=False, timeout=10)
    assert jwks.status_code == 200, jwks.text
    keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks.json()).keys}
    assert header.get("kid") in keys, (header, list(keys))
    claims = jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=["RS256"],
        options={"verify_aud": False},
    )
    for claim in ("iss", "sub", "aud", "exp", "iat", "jti", "scope", "keytype"):
        assert claim in claims, (claim, claims)
    assert claims["keytype"] == key_type, claims
    assert app_id in str(claims), f"application id {app_id} not in the claims: {claims}"


def test_deploy_revision_to_first_echo_is_under_a_second(stack: Stack) -> None:
    """The token is in hand before deploy-revision: the first echo measures the deploy path."""
    with apim(stack) as am:
        api_id = am.create_api(ws_api_body("DeployTimed", "/deploytimed", stack.ports.echo))
        am.publish(api_id)
        revision_id = am.revision(api_id)
        _, _, keys = am.subscribed_app("DeployTimedApp", [api_id])
        token = am.token(keys)
        url = stack.ws + "/deploytimed/1.0.0/notifications"
        denial(handshake(url, token), 404)  # not deployed yet
        expect(am.deploy_revision(api_id, revision_id), 200, 201)
        deployed_at = time.monotonic()
    took, _ = asyncio.run(wait_status(url, token, 101, limit=5, since=deployed_at))
    print(f"\ndeploy-revision answered -> first echo through the router: {took * 1000:.0f} ms")
    assert took < PROMPT, f"took {took:.2f} s"


def test_subscribe_to_first_allowed_handshake_is_under_a_second(stack: Stack) -> None:
    """Keys and token before the subscription: 403 900908 until it reaches the enforcer."""
    with apim(stack) as am:
        api_id = am.live_api(ws_api_body("SubTimed", "/subtimed", stack.ports.echo))
        app_id = am.create_application("SubTimedApp")
        keys = am.generate_keys(app_id)
        token = am.token(keys)
        url = stack.ws + "/subtimed/1.0.0/rooms/lobby"
        # Deployed, valid token, not subscribed: 403 900908 (waits until the API is live).
        refused = wait_status_sync(url, token, 403)
        denial(refused, 403, 900908)
        am.subscribe(app_id, api_id, "AsyncGold")
        subscribed_at = time.monotonic()
    took, _ = asyncio.run(wait_status(url, token, 101, limit=5, since=subscribed_at))
    print(f"\nsubscribe answered -> first allowed handshake: {took * 1000:.0f} ms")
    assert took < PROMPT, f"took {took:.2f} s"


def test_export_zip_round_trips_through_mg_deploy_api(stack: Stack) -> None:
    """GET /apis/export -> zip -> undeploy from the control plane -> `wsgate mg deploy api -f
    <zip>` -> the same API echoes again, now deployed by the CLI."""
    with apim(stack) as am:
        body = ws_api_body("ExportEcho", "/exportecho", stack.ports.echo)
        api_id = am.create_api(body)
        am.publish(api_id)
        revision_id = am.revision(api_id)
        expect(am.deploy_revision(api_id, revision_id), 200, 201)
        exported = am.http.get(f"{PUBLISHER}/apis/export", params={"apiId": api_id})
        assert exported.status_code == 200, exported.text[:500]
        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        names = archive.namelist()
        api_yaml = next((n for n in names if n.endswith("/api.yaml") or n == "api.yaml"), None)
        assert api_yaml, names
        assert any(n.endswith("Definitions/asyncapi.yaml") for n in names), names
        project = yaml.safe_load(archive.read(api_yaml))
        assert project["type"] == "api" and project["data"]["name"] == "ExportEcho", project
        assert project["data"]["context"].startswith("/exportecho"), project
        expect(am.undeploy_revision(api_id, revision_id), 200, 201)
        revisions = expect(am.http.get(f"{PUBLISHER}/apis/{api_id}/revisions"), 200)
        assert all(not r["deploymentInfo"] for r in revisions["list"]), revisions

    url = stack.ws + "/exportecho/1.0.0/notifications"
    testkey = stack.testkey(SCOPE)
    wait_status_sync(url, testkey, 404)  # gone from the gateway
    path = stack.work / "ExportEcho-1.0.0.zip"
    path.write_bytes(exported.content)
    stack.login()
    out = stack.mg_ok("deploy", "api", "-f", str(path), "-e", "dev", "-k")
    assert "Successfully deployed" in out
    listed = stack.mg_ok("get", "apis", "-e", "dev", "-k", "-q", "name:ExportEcho")
    assert "ExportEcho" in listed
    assert wait_status_sync(url, testkey, 101).echoed == "ping"


def test_devportal_lists_what_the_story_made(stack: Stack) -> None:
    """Applications, subscriptions and keys are readable back (WSO2 list shapes)."""
    with apim(stack) as am:
        api_id = am.live_api(ws_api_body("Listed", "/listed", stack.ports.echo))
        app_id, (subscription_id,), keys = am.subscribed_app("ListedApp", [api_id])
        apps = expect(am.http.get(f"{DEVPORTAL}/applications"), 200)
        assert app_id in [a["applicationId"] for a in apps["list"]], apps
        subs = expect(am.http.get(f"{DEVPORTAL}/subscriptions", params={"apiId": api_id}), 200)
        assert subscription_id in [s["subscriptionId"] for s in subs["list"]], subs
        app = expect(am.http.get(f"{DEVPORTAL}/applications/{app_id}"), 200)
        assert app["name"] == "ListedApp", app
        oauth = expect(am.http.get(f"{DEVPORTAL}/applications/{app_id}/oauth-keys"), 200)
        assert keys.consumer_key in [k["consumerKey"] for k in oauth["list"]], oauth


def test_deprecated_api_keeps_serving_and_retiring_undeploys_it(stack: Stack) -> None:
    """WSO2's lifecycle end: DEPRECATED still serves subscribers, RETIRED leaves the gateway."""
    with apim(stack) as am:
        api_id = am.live_api(ws_api_body("Retiring", "/retiring", stack.ports.echo))
        _, _, keys = am.subscribed_app("RetiringApp", [api_id])
        token = am.token(keys)
        url = stack.ws + "/retiring/1.0.0/notifications"
        wait_status_sync(url, token, 101)
        expect(am.lifecycle(api_id, "Deprecate"), 200)
        assert handshake(url, token).echoed == "hello"
        retired = expect(am.lifecycle(api_id, "Retire"), 200)
        assert retired["lifecycleState"]["state"] == "RETIRED", retired
        retired_at = time.monotonic()
        denial(wait_status_sync(url, token, 404, limit=PROMPT), 404)
        took = time.monotonic() - retired_at
        print(f"\nRetire answered -> 404 at the gateway: {took * 1000:.0f} ms")
        # A retired API takes no new subscriptions.
        other = am.create_application("RetiredLate")
        assert am.subscribe_answer(other, api_id, "AsyncGold").status_code == 400
