"""What goes wrong in the API Manager flow, and what the caller is told: each refusal with its
HTTP status and WSO2 code/message, at the gateway (handshake) or at the REST API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.apim_flow import (
    ADMIN,
    DEVPORTAL,
    PUBLISHER,
    Apim,
    Keys,
    apim,
    denial,
    expect,
    expect_error,
    wait_status_sync,
    ws_api_body,
)
from tests.integration.conftest import Stack, handshake
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

FULL = "/errfull/1.0.0/notifications"  # production + sandbox endpoints, AsyncGold + AsyncSilver
PROD_ONLY = "/errprod/1.0.0/notifications"  # production endpoint only, AsyncGold


@dataclass
class World:
    stack: Stack
    am: Apim
    full_id: str
    prod_only_id: str
    subscribed: Keys  # subscribed to both APIs on AsyncGold
    subscribed_sandbox: Keys
    unsubscribed: Keys


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    with apim(stack) as am:
        full_id = am.live_api(
            ws_api_body(
                "ErrFull", "/errfull", stack.ports.echo, policies=("AsyncGold", "AsyncSilver")
            )
        )
        prod_only_id = am.live_api(
            ws_api_body("ErrProd", "/errprod", stack.ports.echo, sandbox=False)
        )
        app_id, _, keys = am.subscribed_app("ErrSubscribed", [full_id, prod_only_id])
        sandbox = am.generate_keys(app_id, "SANDBOX")
        other = am.generate_keys(am.create_application("ErrUnsubscribed"))
        # Both APIs live and the subscriptions on the gateway before any test looks.
        token = am.token(keys)
        wait_status_sync(stack.ws + FULL, token, 101)
        wait_status_sync(stack.ws + PROD_ONLY, token, 101)
        yield World(stack, am, full_id, prod_only_id, keys, sandbox, other)


def _own_app(world: World, name: str, *key_types: str) -> tuple[str, list[Keys]]:
    """A fresh application subscribed to ErrFull, for tests that change its subscription."""
    app_id = world.am.create_application(name)
    subscription_id = world.am.subscribe(app_id, world.full_id, "AsyncGold")
    return subscription_id, [world.am.generate_keys(app_id, kind) for kind in key_types]


# --- at the gateway ---------------------------------------------------------------------------


def test_application_not_subscribed_is_403_900908(world: World) -> None:
    token = world.am.token(world.unsubscribed)
    body = denial(handshake(world.stack.ws + FULL, token), 403, 900908)
    print(f"\nnot subscribed: 403 {body}")


def test_blocked_subscription_is_403_900907_for_new_handshakes(world: World) -> None:
    subscription_id, (keys,) = _own_app(world, "ErrBlocked", "PRODUCTION")
    token = world.am.token(keys)
    url = world.stack.ws + FULL
    wait_status_sync(url, token, 101)
    blocked = expect(world.am.block_subscription(subscription_id, "BLOCKED"), 200)
    print(f"\nblock-subscription answered: {blocked}")
    state = expect(world.am.http.get(f"{DEVPORTAL}/subscriptions/{subscription_id}"), 200)
    assert state["status"] == "BLOCKED", state
    body = denial(wait_status_sync(url, token, 403, limit=PROMPT), 403, 900907)
    print(f"blocked subscription: 403 {body}")
    expect(world.am.unblock_subscription(subscription_id), 200)
    wait_status_sync(url, token, 101, limit=PROMPT)


def test_prod_only_blocked_refuses_production_keys_and_lets_sandbox_keys_through(
    world: World,
) -> None:
    subscription_id, (production, sandbox) = _own_app(world, "ErrProdOnly", "PRODUCTION", "SANDBOX")
    prod_token, sandbox_token = world.am.token(production), world.am.token(sandbox)
    url = world.stack.ws + FULL
    wait_status_sync(url, prod_token, 101)
    expect(world.am.block_subscription(subscription_id, "PROD_ONLY_BLOCKED"), 200)
    body = denial(wait_status_sync(url, prod_token, 403, limit=PROMPT), 403, 900907)
    print(f"\nPROD_ONLY_BLOCKED, production token: 403 {body}")
    assert handshake(url, sandbox_token).echoed == "hello"


def test_sandbox_token_on_an_api_with_a_sandbox_endpoint_passes(world: World) -> None:
    token = world.am.token(world.subscribed_sandbox)
    assert handshake(world.stack.ws + FULL, token).echoed == "hello"


def test_revoked_token_is_401(world: World) -> None:
    token = world.am.token(world.subscribed)
    url = world.stack.ws + FULL
    assert handshake(url, token).status == 101
    revoked = world.am.revoke(world.subscribed, token)
    assert revoked.status_code == 200, revoked.text
    revoked_at = time.monotonic()
    body = denial(wait_status_sync(url, token, 401, limit=PROMPT), 401, 900901)
    print(f"\nrevoked token: 401 {body} ({(time.monotonic() - revoked_at) * 1000:.0f} ms)")
    assert handshake(url, world.am.token(world.subscribed)).status == 101  # a new one works


def test_sandbox_token_on_an_api_without_a_sandbox_endpoint_is_401(world: World) -> None:
    token = world.am.token(world.subscribed_sandbox)
    body = denial(handshake(world.stack.ws + PROD_ONLY, token), 401, 900901)
    assert "sandbox" in str(body["description"]).lower(), body


def test_token_without_the_topic_scope_is_403_900910(world: World) -> None:
    token = world.am.token(world.subscribed, scope="")
    body = denial(handshake(world.stack.ws + FULL, token), 403, 900910)
    print(f"\nno scope: 403 {body}")
    # The topic without scopes takes the same token.
    assert handshake(world.stack.ws + "/errfull/1.0.0/rooms/a", token).status == 101


def test_scope_bound_to_a_role_nobody_has_is_not_granted(world: World) -> None:
    """The token endpoint grants a scope only when the owner has a role it is bound to."""
    am = world.am
    api_id = am.live_api(
        ws_api_body(
            "ErrRole",
            "/errrole",
            world.stack.ports.echo,
            scope="read:secret",
            scope_roles=("no-such-role",),
        )
    )
    _, _, keys = am.subscribed_app("ErrRoleApp", [api_id])
    issued = expect(am.token_answer(keys, "read:secret"), 200)
    assert "read:secret" not in issued.get("scope", "").split(), issued
    url = world.stack.ws + "/errrole/1.0.0/notifications"
    denial(wait_status_sync(url, issued["access_token"], 403), 403, 900910)


# --- at the REST API --------------------------------------------------------------------------


def test_illegal_lifecycle_transition_is_409(world: World) -> None:
    am = world.am
    created = am.create_api(ws_api_body("ErrLife", "/errlife", world.stack.ports.echo))
    expect_error(am.lifecycle(created, "Block"), 409, "CREATED")
    expect_error(am.lifecycle(world.full_id, "Retire"), 409, "PUBLISHED")
    expect_error(am.lifecycle(created, "Fly"), 400, "action")


def test_duplicate_context_is_409(world: World) -> None:
    body = ws_api_body("ErrFullAgain", "/errfull", world.stack.ports.echo)
    expect_error(world.am.http.post(f"{PUBLISHER}/apis", json=body), 409, "context")
    # The same context under another version is fine.
    world.am.create_api(ws_api_body("ErrFull", "/errfull", world.stack.ports.echo, version="2.0"))


def test_unknown_tier_on_create_is_400_naming_policies(world: World) -> None:
    body = ws_api_body("ErrTier", "/errtier", world.stack.ports.echo, policies=("Platinum9",))
    expect_error(world.am.http.post(f"{PUBLISHER}/apis", json=body), 400, "polic")


def test_subscribing_on_a_tier_the_api_does_not_offer_is_400(world: World) -> None:
    app_id = world.am.create_application("ErrWrongTier")
    answer = world.am.subscribe_answer(app_id, world.prod_only_id, "AsyncBronze")
    expect_error(answer, 400, "AsyncBronze")


def test_subscribing_to_an_unpublished_api_is_400(world: World) -> None:
    api_id = world.am.create_api(ws_api_body("ErrDraft", "/errdraft", world.stack.ports.echo))
    app_id = world.am.create_application("ErrDraftApp")
    expect_error(world.am.subscribe_answer(app_id, api_id, "AsyncGold"), 400)


def test_deleting_an_api_with_subscriptions_is_409(world: World) -> None:
    answer = world.am.http.delete(f"{PUBLISHER}/apis/{world.prod_only_id}")
    expect_error(answer, 409, "subscri")


def test_generate_keys_with_a_bad_key_type_is_400(world: World) -> None:
    app_id = world.am.create_application("ErrKeyType")
    answer = world.am.http.post(
        f"{DEVPORTAL}/applications/{app_id}/generate-keys",
        json={"keyType": "STAGING", "grantTypesToBeSupported": ["client_credentials"]},
    )
    expect_error(answer, 400, "keyType")


def test_token_endpoint_refuses_bad_clients_and_grants(world: World) -> None:
    """RFC 6749 5.2: 401 invalid_client, 400 unsupported_grant_type."""
    url = f"{world.stack.cp_url}/oauth2/token"
    keys = world.subscribed
    wrong = httpx.post(
        url,
        data={"grant_type": "client_credentials"},
        auth=(keys.consumer_key, "not-the-secret"),
        verify=False,
    )
    assert wrong.status_code == 401, wrong.text
    assert wrong.json()["error"] == "invalid_client", wrong.text
    anonymous = httpx.post(url, data={"grant_type": "client_credentials"}, verify=False)
    assert anonymous.status_code == 401, anonymous.text
    grant = httpx.post(
        url,
        data={"grant_type": "password", "username": "admin", "password": "admin"},
        auth=(keys.consumer_key, keys.consumer_secret),
        verify=False,
    )
    assert grant.status_code == 400, grant.text
    assert grant.json()["error"] == "unsupported_grant_type", grant.text
    revoke_wrong = httpx.post(
        f"{world.stack.cp_url}/oauth2/revoke",
        data={"token": "x"},
        auth=(keys.consumer_key, "not-the-secret"),
        verify=False,
    )
    assert revoke_wrong.status_code == 401, revoke_wrong.text


def test_publisher_and_devportal_need_credentials(world: World) -> None:
    for path in (f"{PUBLISHER}/apis", f"{DEVPORTAL}/applications", f"{ADMIN}/environments"):
        answer = httpx.get(world.stack.cp_url + path, verify=False)
        expect_error(answer, 401)


def test_admin_lists_the_default_async_tiers(world: World) -> None:
    listed = expect(world.am.http.get(f"{ADMIN}/throttling/policies/subscription"), 200)
    names = {p["policyName"] for p in listed["list"]}
    assert {"AsyncGold", "AsyncSilver", "AsyncBronze", "AsyncUnlimited"} <= names, names
