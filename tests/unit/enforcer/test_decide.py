from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import pytest

from enforcer.decide import bearer_token, decide
from enforcer.denials import AuthError, Denial, ErrorCode
from enforcer.policies import ApiEntry
from enforcer.tokens import Application, Claims
from wsgate_proto import config_pb2, enforcer_pb2

from .conftest import NOW


def entry(
    *,
    secured: bool = True,
    scopes: tuple[str, ...] = (),
    lifecycle: str = "PUBLISHED",
    production: bool = True,
    sandbox: bool = False,
    source: str = "adapter",
) -> ApiEntry:
    topic = config_pb2.TopicPolicy(path="/rooms/{room}", secured=secured, scopes=list(scopes))
    api = config_pb2.ApiPolicy(
        api_id="chat:1.0.0",
        lifecycle_status=lifecycle,
        topics=[topic],
        api_throttling_policy="AsyncGold",
        has_production_endpoint=production,
        has_sandbox_endpoint=sandbox,
        source=source,
    )
    return ApiEntry(api=api, topics=MappingProxyType({topic.path: topic}))


def request(
    authorization: str = "Bearer tok", topic: str = "/rooms/{room}"
) -> enforcer_pb2.HandshakeRequest:
    return enforcer_pb2.HandshakeRequest(
        request_id="r1", api_id="chat:1.0.0", topic=topic, authorization=authorization
    )


def token_claims(
    scopes: tuple[str, ...] = ("read",),
    key_type: str = "PRODUCTION",
    check_subscriptions: bool = False,
    application: Application | None = None,
) -> Claims:
    return Claims(
        issuer="https://localhost:9095/testkey",
        issuer_name="testkey",
        subject="alice",
        scopes=scopes,
        key_type=key_type,
        token_id="jti-1",
        expires_at=NOW + 60,
        application=application,
        check_subscriptions=check_subscriptions,
        raw={},
    )


def accept(c: Claims) -> Callable[[str], Claims]:
    def authenticate(token: str) -> Claims:
        assert token == "tok"
        return c

    return authenticate


def refuse(token: str) -> Claims:
    raise AuthError("Access token expired")


def never(token: str) -> Claims:
    raise AssertionError("the token must not be looked at")


def test_unknown_api_is_404() -> None:
    response = decide(request(), None, never)
    assert not response.allowed
    assert (response.http_status, response.error_code) == (404, 404)


def test_unknown_topic_is_404() -> None:
    response = decide(request(topic="/other"), entry(), never)
    assert (response.http_status, response.error_code) == (404, ErrorCode.RESOURCE_NOT_FOUND)


def test_unsecured_topic_needs_no_token() -> None:
    response = decide(request(authorization=""), entry(secured=False, scopes=("x",)), never)
    assert response.allowed
    assert response.key_type == "PRODUCTION"
    assert response.token_expires_at == 0
    assert response.api_tier == "AsyncGold"


def test_unsecured_topic_ignores_a_bad_token() -> None:
    response = decide(request(authorization="Bearer garbage"), entry(secured=False), never)
    assert response.allowed


@pytest.mark.parametrize("authorization", ["", "   "])
def test_missing_credentials(authorization: str) -> None:
    response = decide(request(authorization=authorization), entry(), never)
    assert (response.http_status, response.error_code) == (401, 900902)
    assert response.message == "Missing Credentials"
    assert "Authorization : Bearer ACCESS_TOKEN" in response.description


@pytest.mark.parametrize("authorization", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer   ", "tok"])
def test_non_bearer_is_missing_credentials(authorization: str) -> None:
    response = decide(request(authorization=authorization), entry(), never)
    assert (response.http_status, response.error_code) == (401, 900902)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer tok") == "tok"
    with pytest.raises(Denial):
        bearer_token("Bearertok")


def test_invalid_token_is_401_900901() -> None:
    response = decide(request(), entry(), refuse)
    assert (response.http_status, response.error_code) == (401, 900901)
    assert response.message == "Invalid Credentials"
    assert response.description == "Access token expired"


def test_scope_mismatch_is_403() -> None:
    response = decide(request(), entry(scopes=("admin", "write")), accept(token_claims()))
    assert (response.http_status, response.error_code) == (403, 900910)
    assert response.message.startswith("The access token does not allow you to access")


def test_any_one_topic_scope_is_enough() -> None:
    response = decide(request(), entry(scopes=("admin", "read")), accept(token_claims()))
    assert response.allowed


def test_topic_without_scopes_allows_any_valid_token() -> None:
    assert decide(request(), entry(), accept(token_claims(scopes=()))).allowed


def test_blocked_api_is_503_even_when_unsecured() -> None:
    for secured in (True, False):
        response = decide(request(), entry(lifecycle="BLOCKED", secured=secured), never)
        assert (response.http_status, response.error_code) == (503, 700700)
        assert response.message == "API blocked"


def test_sandbox_key_without_sandbox_endpoint() -> None:
    response = decide(request(), entry(), accept(token_claims(key_type="SANDBOX")))
    assert (response.http_status, response.error_code) == (401, 900901)
    assert "sandbox" in response.description.lower()


def test_sandbox_key_with_sandbox_endpoint() -> None:
    response = decide(request(), entry(sandbox=True), accept(token_claims(key_type="SANDBOX")))
    assert response.allowed
    assert response.key_type == "SANDBOX"


def test_production_key_without_production_endpoint() -> None:
    response = decide(request(), entry(production=False, sandbox=True), accept(token_claims()))
    assert (response.http_status, response.error_code) == (401, 900901)


def test_allowed_carries_token_details() -> None:
    app = Application(id="app-1", name="App", tier="Gold", owner="bob")
    response = decide(
        request(), entry(scopes=("read",)), accept(token_claims(("read", "x"), application=app))
    )
    assert response.allowed
    assert response.http_status == 0
    assert response.key_type == "PRODUCTION"
    assert response.subscriber == "alice"
    assert response.token_id == "jti-1"
    assert response.token_expires_at == NOW + 60
    assert list(response.scopes) == ["read", "x"]
    assert (response.application_id, response.application_name) == ("app-1", "App")
    assert response.application_tier == "Gold"
    assert response.api_tier == "AsyncGold"
    assert response.subscription_tier == "Unlimited"


def test_key_manager_tokens_are_checked_against_subscriptions() -> None:
    # Without subscription data a key-manager token has no application: refused.
    c = token_claims(check_subscriptions=True)
    response = decide(request(), entry(source="control-plane"), accept(c))
    assert (response.http_status, response.error_code) == (403, 900908)
    assert response.description == "no application is registered for this consumer key"


def test_test_keys_skip_subscription_checks() -> None:
    response = decide(request(), entry(), accept(token_claims()))
    assert response.allowed
    assert response.subscription_id == ""
