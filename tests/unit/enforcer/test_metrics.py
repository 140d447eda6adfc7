"""The enforcer's /metrics: decisions counted per Check, state read at scrape time."""

from __future__ import annotations

import httpx

from enforcer.http import build_app
from enforcer.issuers import IssuerRegistry
from enforcer.metrics import EnforcerMetrics
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.subscriptions import EMPTY_STATE, SubscriptionState
from enforcer.testkey import TestKeySigner
from enforcer.watch import ConnectionWatch
from wsgate_common.metrics import parse_samples
from wsgate_proto import subscription_pb2 as sp

from .conftest import NOW
from .test_service import ask, store


def test_decisions_and_state_are_exported(signer: TestKeySigner) -> None:
    metrics = EnforcerMetrics()
    policies = store()
    state = SubscriptionState(
        applications={"a1": sp.Application(), "a2": sp.Application()},
        revoked={"jti-1": NOW + 60},
    )
    nacks = [0]
    metrics.watch_state(
        nacks=lambda: nacks[0],
        subscriptions=lambda: state,
        policies=policies,
        watch=ConnectionWatch(clock=lambda: NOW),
    )
    service = HandshakeService(
        policies, IssuerRegistry([signer.as_issuer()]), clock=lambda: NOW, metrics=metrics
    )
    assert ask(service, signer.issue("admin", ["read"], NOW)).allowed
    assert not ask(service, signer.issue("admin", ["write"], NOW)).allowed
    assert not ask(service, "garbage").allowed
    nacks[0] = 2

    got = parse_samples(metrics.render().decode())
    assert got['wsgate_enforcer_decisions_total{code="200",result="allowed"}'] == 1
    assert got['wsgate_enforcer_decisions_total{code="403",result="denied"}'] == 1
    assert got['wsgate_enforcer_decisions_total{code="401",result="denied"}'] == 1
    assert got["wsgate_enforcer_decision_seconds_count"] == 3
    assert got["wsgate_enforcer_xds_nacks_total"] == 2
    assert got['wsgate_enforcer_subscription_data_items{kind="applications"}'] == 2
    assert got['wsgate_enforcer_subscription_data_items{kind="revoked_tokens"}'] == 1
    assert got['wsgate_enforcer_subscription_data_items{kind="subscriptions"}'] == 0
    assert got["wsgate_enforcer_api_policies"] == 1
    assert got["wsgate_enforcer_watch_streams"] == 0
    assert got["wsgate_enforcer_connection_rules"] == 0


def test_a_broken_reading_is_left_out_not_fatal() -> None:
    metrics = EnforcerMetrics()

    def broken() -> SubscriptionState:
        raise RuntimeError("boom")

    metrics.watch_state(
        nacks=lambda: 0, subscriptions=broken, policies=PolicyStore(), watch=ConnectionWatch()
    )
    text = metrics.render().decode()
    assert "wsgate_enforcer_xds_nacks_total 0.0" in text
    assert "subscription_data_items{" not in text
    assert EMPTY_STATE.applications == {}


async def test_metrics_endpoint(signer: TestKeySigner) -> None:
    metrics = EnforcerMetrics()
    metrics.decided(False, 401, 0.002)
    app = build_app(signer, {}, lambda: True, clock=lambda: NOW, metrics=metrics.render)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
        page = await http.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = parse_samples(page.text)
    assert got['wsgate_enforcer_decisions_total{code="401",result="denied"}'] == 1


async def test_no_metrics_page_unless_asked(signer: TestKeySigner) -> None:
    app = build_app(signer, {}, lambda: True, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
        assert (await http.get("/metrics")).status_code == 404
