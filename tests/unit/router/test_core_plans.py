"""Handshake plans (router.server.CoreHandshakes._make_plan, core.c hs_try_plan): a request
Python decided and the core started is repeated by the core alone when the same head (but its
Sec-WebSocket-Key) comes again from the same address; a plan never outlives the decision cache
entry it was made from, and what the client and the backend see is what Python would have
made. Real router, real backends, the enforcer double of test_server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from router import backend, credentials, http11
from router.analytics import ConnectionEvent, HandshakeEvent
from router.server import _Plan, backend_headers
from tests.procs import eventually
from tests.unit.router.test_analytics import ListSink
from tests.unit.router.test_core_handshake import PLAIN, fake_backend, masked, raw, stats
from tests.unit.router.test_server import Env, make_routes, open_env, packed
from tests.unit.router.test_server_decisions import stream_up
from wsgate_proto import config_pb2, enforcer_pb2


@contextlib.asynccontextmanager
async def plan_env(tmp_path: Path, **overrides: Any) -> AsyncIterator[Env]:
    """A native router with plans on and its decision cache usable."""
    async with open_env(tmp_path, relay="native", native_plans=True, **overrides) as env:
        stream_up(env)
        yield env


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def head(env: Env, key: str, token: str = "alice", extra: str = "", path: str = "") -> bytes:
    return (
        f"GET {path or '/echo/1.0.0'} HTTP/1.1\r\nHost: 127.0.0.1:{env.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    ).encode()


async def shake(env: Env, token: str = "alice", extra: str = "", echo: bool = True) -> int:
    """One handshake (checked: the 101 is the one for our key) and an echo; the status."""
    key = new_key()
    async with raw(env) as (reader, writer):
        writer.write(head(env, key, token, extra))
        got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(got.split(b" ", 2)[1])
        if status == 101:
            accept = http11.accept_key(key)
            assert got == PLAIN + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            if echo:
                writer.write(masked(b"hi"))
                assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x81\x02hi"
    return status


def planned(env: Env) -> int:
    return stats(env)["planned"]


async def settled(env: Env) -> None:
    await eventually(lambda: not env.router.relays and env.router.upgrading == 0)


async def test_a_repeated_handshake_is_done_by_a_plan(tmp_path: Path) -> None:
    sink = ListSink()
    async with plan_env(tmp_path, sinks=[sink], analytics_interval=0.05) as env:
        for _ in range(4):
            assert await shake(env) == 101
        # the first was decided by Python (a miss), the others by its plan: no Check either
        assert planned(env) == 3 and stats(env)["plans"] == 1
        assert len(env.enforcer.requests) == 1
        assert env.router.decisions.hits == 3
        ids = [h["x-request-id"] for h in env.backend.headers[-4:]]
        assert len(set(ids)) == 4 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
        keys = {h["sec-websocket-key"] for h in env.backend.headers[-4:]}
        assert len(keys) == 4
        for seen in env.backend.headers[-3:]:  # what Python sent the backend, but key and id
            same = {k: v for k, v in seen.items() if k not in ("sec-websocket-key", "x-request-id")}
            first = env.backend.headers[-4]
            assert same == {
                k: v for k, v in first.items() if k not in ("sec-websocket-key", "x-request-id")
            }
        metrics = env.router.metrics_text().decode()
        assert 'wsgate_router_core_handshakes_total{outcome="planned"} 3.0' in metrics
        assert 'wsgate_router_handshakes_total{result="allowed",status="101"} 4.0' in metrics
        assert 'wsgate_router_decision_cache_lookups_total{result="hit"} 3.0' in metrics
        await settled(env)
        assert not env.router.live.snapshot()
        await eventually(
            lambda: sum(isinstance(e, ConnectionEvent) and e.final for e in sink.events) == 4
        )
    shakes = [e for e in sink.events if isinstance(e, HandshakeEvent)]
    assert len(shakes) == 4
    python, *by_plan = shakes
    assert {t.tags.request_id for t in shakes} == set(ids)
    for event in by_plan:  # the same event as Python's, but its own request id
        assert (event.allowed, event.status, event.reason) == (True, 101, "")
        assert replace(event.tags, request_id="") == replace(python.tags, request_id="")


async def test_the_core_builds_what_python_builds(tmp_path: Path) -> None:
    """Differential: for random keys and ids, the plan's backend request and client answer
    equal router.backend's and router.http11's for the same inputs."""
    async with plan_env(tmp_path) as env:
        origin = "Origin: http://site.example\r\n"
        assert await shake(env, extra=origin) == 101
        handshakes = env.router.core_handshakes
        assert handshakes is not None and len(handshakes.plans) == 1
        ident, plan = next(iter(handshakes.plans.items()))
        assert isinstance(plan, _Plan)
        core = handshakes.core
        for _ in range(50):
            ckey, bkey, rid = new_key(), new_key(), os.urandom(16).hex()
            request, answer, expect = core.plan_build(
                ident, ckey.encode(), bkey.encode(), rid.encode()
            )
            headers = backend_headers(plan.request, rid, plan.found, plan.strip, "127.0.0.1")
            assert request == backend.build_request(plan.target, bkey, headers)
            protocol = credentials.selected_subprotocol(plan.found, "")
            assert answer == http11.switching_protocols(http11.accept_key(ckey), protocol)
            assert expect == http11.accept_key(bkey).encode()
        assert b"origin: http://site.example\r\n" in request


async def test_a_changed_head_misses_the_plan(tmp_path: Path) -> None:
    async with plan_env(tmp_path) as env:
        assert await shake(env) == 101 and await shake(env) == 101
        assert planned(env) == 1
        checks = len(env.enforcer.requests)
        assert await shake(env, "bob") == 101  # another token: Python, and the enforcer
        assert planned(env) == 1 and len(env.enforcer.requests) == checks + 1
        assert await shake(env, extra="Origin: http://other.example\r\n") == 101
        assert planned(env) == 1 and len(env.enforcer.requests) == checks + 2
        assert await shake(env, extra="User-Agent: another\r\n") == 101  # a cache hit: Python
        assert planned(env) == 1 and len(env.enforcer.requests) == checks + 2
        for _ in range(2):  # the client's own request id: Python keeps it, never a plan
            assert await shake(env, extra="X-Request-ID: mine-1\r\n") == 101
            assert env.backend.headers[-1]["x-request-id"] == "mine-1"
        assert planned(env) == 1
        assert await shake(env, "bob") == 101  # bob's head has its own plan by now
        assert planned(env) == 2
        assert await shake(env) == 101
        assert planned(env) == 3
        await settled(env)


async def test_rules_versions_and_the_stream_drop_plans_at_once(tmp_path: Path) -> None:
    async with plan_env(tmp_path) as env:

        async def plan_made() -> None:
            assert await shake(env) == 101
            assert stats(env)["plans"] == 1

        router = env.router
        await plan_made()
        # the token is revoked: the plan is gone before the next head, which Python refuses
        router.apply_rule(enforcer_pb2.ConnectionRule(token_id="alice", reason="revoked"))
        assert stats(env)["plans"] == 0
        env.enforcer.denied.add("Bearer alice")
        before = planned(env)
        assert await shake(env) == 403
        assert planned(env) == before
        env.enforcer.denied.clear()
        await plan_made()
        router.apply_rule(enforcer_pb2.ConnectionRule(api_id="echo", reason="API blocked"))
        assert stats(env)["plans"] == 0
        await plan_made()
        stream_up(env, "v2")  # the enforcer's data changed
        assert stats(env)["plans"] == 0
        await plan_made()
        env.store.apply("v-next", packed(make_routes(env.backend_port)))  # a redeploy
        assert stats(env)["plans"] == 0
        await plan_made()
        router.rules_stream(False)  # rules could be missed: no plan, no cache
        assert stats(env)["plans"] == 0
        before, checks = planned(env), len(env.enforcer.requests)
        for _ in range(3):
            assert await shake(env) == 101
        assert planned(env) == before and len(env.enforcer.requests) == checks + 3
        assert stats(env)["plans"] == 0
        await settled(env)


async def test_a_plan_ends_with_its_cache_entry(tmp_path: Path) -> None:
    async with plan_env(tmp_path, decision_cache_ttl=0.5) as env:
        assert await shake(env) == 101 and await shake(env) == 101
        assert planned(env) == 1
        await asyncio.sleep(0.6)
        checks = len(env.enforcer.requests)
        assert await shake(env) == 101
        assert planned(env) == 1 and len(env.enforcer.requests) == checks + 1
        await settled(env)


async def test_the_connection_limit_holds_for_planned_handshakes(tmp_path: Path) -> None:
    async with plan_env(tmp_path, max_connections=3) as env:
        assert await shake(env) == 101 and await shake(env) == 101
        await settled(env)
        base = planned(env)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                reader, writer = await stack.enter_async_context(raw(env))
                writer.write(head(env, new_key()))
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))[9:12] == b"101"
            # the core leaves the last place to Python (whose check is not atomic with its)
            assert planned(env) == base + 2
            for _ in range(3):
                assert await shake(env) == 503
            assert planned(env) == base + 2
        await settled(env)
        assert await shake(env) == 101
        assert planned(env) == base + 3


def plain_101(request: bytes) -> bytes:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = http11.accept_key(key.decode())
    return PLAIN + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()


async def refused_third(tmp_path: Path, plans: bool, third: bytes | None) -> tuple[bytes, int]:
    """Two handshakes answered with a plain 101 by a backend, then a third answered ``third``
    (None: hang up): the third's answer to the client, and how many handshakes were planned."""
    count = 0

    async def answer_with(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        request = await reader.readuntil(b"\r\n\r\n")
        if count <= 2:
            writer.write(plain_101(request))
            await writer.drain()
            await asyncio.sleep(0.05)
        elif third is not None:
            writer.write(third)
            await writer.drain()

    async with (
        fake_backend(answer_with) as port,
        open_env(tmp_path, relay="native", native_plans=plans) as env,
    ):
        routes = make_routes(env.backend_port)
        routes[0].topics.append(
            config_pb2.RouteTopic(path="/fake", production_url=f"ws://127.0.0.1:{port}/")
        )
        env.store.apply("v-fake", packed(routes))
        stream_up(env)
        answers = []
        for _ in range(3):
            async with raw(env) as (reader, writer):
                writer.write(head(env, new_key(), path="/echo/1.0.0/fake"))
                got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                if not got.startswith(b"HTTP/1.1 101"):
                    got += await asyncio.wait_for(reader.read(), 5)
                answers.append(got)
        assert all(a.startswith(b"HTTP/1.1 101") for a in answers[:2])
        count_planned = planned(env)
        if plans:
            assert stats(env)["plans"] == 0  # a failed plan is dropped: Python sees the next
        await settled(env)
        return answers[2], count_planned


async def test_a_planned_handshake_that_fails_ends_as_python_ends_it(tmp_path: Path) -> None:
    for third in (b"HTTP/1.1 500 Nope\r\nContent-Length: 0\r\n\r\n", None):
        by_python, none = await refused_third(tmp_path / "python", False, third)
        by_plan, count = await refused_third(tmp_path / "plan", True, third)
        assert none == 0 and count == 2
        status, _, body = by_plan.partition(b"\r\n\r\n")
        assert by_plan == by_python, (by_plan, by_python)
        assert status.startswith(b"HTTP/1.1 502") and json.loads(body)["code"] == 101503


async def test_a_client_leaving_a_planned_handshake_is_logged_as_python_logs_it(
    tmp_path: Path,
) -> None:
    count = 0
    release = asyncio.Event()

    async def answer_with(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        request = await reader.readuntil(b"\r\n\r\n")
        if count == 3:
            await release.wait()  # the third backend upgrade never ends by itself
            return
        writer.write(plain_101(request))
        await writer.drain()
        await asyncio.sleep(0.05)

    async with (
        fake_backend(answer_with) as port,
        open_env(tmp_path, relay="native", native_plans=True) as env,
    ):
        routes = make_routes(env.backend_port)
        routes[0].topics.append(
            config_pb2.RouteTopic(path="/slow", production_url=f"ws://127.0.0.1:{port}/")
        )
        env.store.apply("v-slow", packed(routes))
        stream_up(env)
        for _ in range(2):
            async with raw(env) as (reader, writer):
                writer.write(head(env, new_key(), path="/echo/1.0.0/slow"))
                got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert got.startswith(b"HTTP/1.1 101")
        async with raw(env) as (reader, writer):
            writer.write(head(env, new_key(), path="/echo/1.0.0/slow"))
            await eventually(lambda: count == 3)
        assert planned(env) == 2
        await eventually(
            lambda: (
                'handshakes_total{result="denied",status="499"} 1.0'
                in env.router.metrics_text().decode()
            )
        )
        release.set()
        await settled(env)
        assert not env.router.live.snapshot()


async def test_planned_connections_count_against_the_same_quota(tmp_path: Path) -> None:
    async with plan_env(tmp_path) as env:
        env.enforcer.quotas = [
            enforcer_pb2.Quota(
                key="sub:q", message_count=5, window_seconds=60, stop_on_quota_reach=True
            )
        ]
        for _ in range(2):  # Python's (a miss), then a plan's: 2 messages counted each
            assert await shake(env) == 101
        assert planned(env) == 1
        async with raw(env) as (reader, writer):  # a plan's again: the fifth passes, not more
            writer.write(head(env, new_key()))
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))[9:12] == b"101"
            writer.write(masked(b"a"))
            close = await asyncio.wait_for(reader.readexactly(4), 5)
            assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1008
        assert planned(env) == 2
        await settled(env)
        assert not env.router.live.snapshot()
        core = env.router.core_handshakes
        assert core is not None and not core.upgrades
