from __future__ import annotations

import logging

import pytest
from google.protobuf import any_pb2

from enforcer.issuers import IssuerRegistry
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.testkey import TestKeySigner
from enforcer.tokens import Claims
from wsgate_proto import config_pb2, enforcer_pb2

from .conftest import NOW


def store() -> PolicyStore:
    policy = config_pb2.ApiPolicy(
        api_id="api",
        has_production_endpoint=True,
        topics=[config_pb2.TopicPolicy(path="/t", secured=True, scopes=["read"])],
    )
    resource = any_pb2.Any()
    resource.Pack(policy)
    policies = PolicyStore()
    policies.apply("1", [resource])
    return policies


def ask(service: HandshakeService, token: str) -> enforcer_pb2.HandshakeResponse:
    return service.check(
        enforcer_pb2.HandshakeRequest(
            request_id="r-1", api_id="api", topic="/t", authorization=f"Bearer {token}"
        )
    )


def test_check_validates_real_tokens(
    signer: TestKeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    service = HandshakeService(store(), IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW)
    caplog.set_level(logging.INFO, "enforcer.decisions")
    assert ask(service, signer.issue("admin", ["read"], NOW)).allowed
    denied = ask(service, signer.issue("admin", ["write"], NOW))
    assert (denied.http_status, denied.error_code) == (403, 900910)
    expired = ask(service, signer.issue("admin", ["read"], NOW - 7200))
    assert (expired.http_status, expired.description) == (401, "Access token expired")
    lines = [r.getMessage() for r in caplog.records if r.name == "enforcer.decisions"]
    assert len(lines) == 3
    assert "request r-1 api api topic /t: allowed PRODUCTION" in lines[0]
    assert "denied 403 900910 (scope mismatch)" in lines[1]


def test_a_bug_becomes_a_500_denial(signer: TestKeySigner) -> None:
    class Broken(HandshakeService):
        def authenticate(self, token: str) -> Claims:
            raise RuntimeError("boom")

    service = Broken(store(), IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW)
    response = ask(service, "x.y.z")
    assert not response.allowed
    assert (response.http_status, response.error_code) == (500, 900900)
