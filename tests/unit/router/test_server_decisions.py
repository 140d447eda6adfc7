"""The decision cache inside the router's handshake path (router/server.py + router/decisions.py),
with a real router, backend and a gRPC enforcer double: which handshakes reach the enforcer."""

from __future__ import annotations

from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.unit.router.test_server import Env, make_routes, open_env, packed
from wsgate_proto import enforcer_pb2


async def handshake(env: Env, token: str = "alice") -> int:
    """One connect -> echo -> close; the status the router answered."""
    try:
        async with connect(
            env.url(), additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


def stream_up(env: Env, version: str = "v1") -> None:
    """What the rules stream does when it opens: up, then the enforcer's data version."""
    env.enforcer.data_version = version
    env.router.rules_stream(True)
    env.router.apply_rule(enforcer_pb2.ConnectionRule(data_version=version))


async def checks(env: Env, count: int, token: str = "alice") -> int:
    """Enforcer Checks made by ``count`` handshakes with ``token`` (all allowed)."""
    before = len(env.enforcer.requests)
    for _ in range(count):
        assert await handshake(env, token) == 101
    return len(env.enforcer.requests) - before


async def test_reconnects_skip_the_enforcer_until_a_rule_selects_them(tmp_path: Path) -> None:
    async with open_env(tmp_path) as env:
        stream_up(env)
        assert await checks(env, 3) == 1
        assert await checks(env, 2, "bob") == 1  # another credential: its own entry
        decisions = env.router.decisions
        assert (decisions.hits, decisions.misses) == (3, 2)
        # the rule closing alice's token forgets her allow, not bob's
        env.router.apply_rule(enforcer_pb2.ConnectionRule(token_id="alice", reason="revoked"))
        assert await checks(env, 1) == 1
        assert await checks(env, 1, "bob") == 0
        # an API-wide rule forgets every allow of the API
        env.router.apply_rule(enforcer_pb2.ConnectionRule(api_id="echo", reason="API blocked"))
        assert await checks(env, 1) == 1 and await checks(env, 1, "bob") == 1
        metrics = env.router.metrics_text().decode()
        assert 'wsgate_router_decision_cache_lookups_total{result="hit"} 4.0' in metrics
        assert 'wsgate_router_decision_cache_evictions_total{cause="rule"} 3.0' in metrics


async def test_new_versions_empty_it_and_a_lost_stream_bypasses_it(tmp_path: Path) -> None:
    async with open_env(tmp_path) as env:
        stream_up(env)
        assert await checks(env, 2) == 1
        # the enforcer's data changed: everything is asked again, at the new version
        stream_up(env, "v2")
        assert await checks(env, 2) == 1
        # new routes: the same
        env.store.apply("v-next", packed(make_routes(env.backend_port)))
        assert await checks(env, 2) == 1
        # the rules stream is down: every handshake is checked, nothing is kept
        env.router.rules_stream(False)
        assert await checks(env, 3) == 3
        assert len(env.router.decisions) == 0
        stream_up(env, "v2")
        assert await checks(env, 2) == 1


async def test_answers_from_another_data_version_and_denials_are_not_kept(
    tmp_path: Path,
) -> None:
    async with open_env(tmp_path) as env:
        stream_up(env)
        env.enforcer.data_version = "v0"  # decided before the change the router already heard of
        assert await checks(env, 2) == 2
        env.enforcer.data_version = "v1"
        before = len(env.enforcer.requests)
        assert await handshake(env, "deny") == 403
        assert await handshake(env, "deny") == 403
        assert len(env.enforcer.requests) - before == 2


async def test_a_zero_ttl_never_uses_it(tmp_path: Path) -> None:
    async with open_env(tmp_path, decision_cache_ttl=0) as env:
        stream_up(env)
        assert await checks(env, 3) == 3
        assert (env.router.decisions.hits, env.router.decisions.misses) == (0, 0)
