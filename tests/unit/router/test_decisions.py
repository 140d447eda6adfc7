"""The router's decision cache (router/decisions.py), driven directly with explicit clocks."""

from __future__ import annotations

import pytest

from router.decisions import DecisionCache, decision_key
from wsgate_proto import enforcer_pb2

NOW = 1_000.0  # monotonic
WALL = 1_800_000_000.0  # epoch seconds
VERSION = "v1"


def allow(
    token_id: str = "jti-1",
    app: str = "app-1",
    key_type: str = "PRODUCTION",
    expires_at: int = int(WALL) + 3600,
    version: str = VERSION,
) -> enforcer_pb2.HandshakeResponse:
    return enforcer_pb2.HandshakeResponse(
        allowed=True,
        key_type=key_type,
        application_id=app,
        token_id=token_id,
        token_expires_at=expires_at,
        data_version=version,
        quotas=[enforcer_pb2.Quota(key="sub:app-1:api-1", message_count=10, window_seconds=1)],
    )


def ready(ttl: float = 30.0, capacity: int = 100) -> DecisionCache:
    cache = DecisionCache(ttl, capacity)
    cache.stream_opened()
    cache.set_data_version(VERSION)
    return cache


def key(token: str = "tok", api: str = "api-1", **more: str) -> bytes:
    return decision_key(api, "/rooms/{id}", [("oauth2", token)], **more)


def test_an_allow_is_served_until_its_ttl_with_the_same_quotas() -> None:
    cache = ready(ttl=30)
    assert cache.get(key(), NOW) is None
    assert cache.put(key(), allow(), "api-1", NOW, WALL)
    hit = cache.get(key(), NOW + 29)
    assert hit is not None and hit.quotas[0].key == "sub:app-1:api-1"
    assert cache.get(key(), NOW + 30) is None
    assert (cache.hits, cache.misses, cache.evicted["expired"]) == (1, 2, 1)


def test_never_past_the_token_expiry() -> None:
    cache = ready(ttl=30)
    assert cache.put(key(), allow(expires_at=int(WALL) + 5), "api-1", NOW, WALL)
    assert cache.get(key(), NOW + 4.9) is not None
    assert cache.get(key(), NOW + 5) is None
    # an expired (or expiring now) token is not stored at all
    assert not cache.put(key("t2"), allow(expires_at=int(WALL)), "api-1", NOW, WALL)
    # 0: a credential that does not expire: the ttl alone bounds it
    assert cache.put(key("t3"), allow(expires_at=0), "api-1", NOW, WALL)
    assert cache.get(key("t3"), NOW + 29) is not None


def test_only_allows_are_cached() -> None:
    cache = ready()
    denial = enforcer_pb2.HandshakeResponse(allowed=False, http_status=401, data_version=VERSION)
    assert not cache.put(key(), denial, "api-1", NOW, WALL)
    assert cache.get(key(), NOW) is None and len(cache) == 0


def test_the_key_covers_every_input_of_the_decision() -> None:
    base = key()
    assert key("other") != base
    assert key(api="api-2") != base
    assert decision_key("api-1", "/other", [("oauth2", "tok")]) != base
    assert decision_key("api-1", "/rooms/{id}", [("api_key", "tok")]) != base
    assert key(origin="https://a.example") != base
    assert key(referer="https://a.example/page") != base
    assert key(authorization="Bearer tok") != base
    # the client address counts for API keys (IP restrictions), not for access tokens
    assert key(client_ip="10.0.0.1") == key(client_ip="10.0.0.2")
    api_key = [("api_key", "k")]
    assert decision_key("a", "/t", api_key, client_ip="10.0.0.1") != decision_key(
        "a", "/t", api_key, client_ip="10.0.0.2"
    )
    # fields cannot run into each other
    assert decision_key("ab", "c", []) != decision_key("a", "bc", [])
    assert b"tok" not in base


@pytest.mark.parametrize(
    ("rule", "evicted"),
    [
        (enforcer_pb2.ConnectionRule(token_id="jti-1", reason="token revoked"), {"a"}),
        (
            enforcer_pb2.ConnectionRule(
                application_id="app-1", api_id="api-1", reason="subscription blocked"
            ),
            {"a"},
        ),
        (
            enforcer_pb2.ConnectionRule(
                application_id="app-1",
                api_id="api-1",
                key_type="PRODUCTION",
                reason="subscription blocked for production keys",
            ),
            {"a"},
        ),
        (
            enforcer_pb2.ConnectionRule(
                application_id="app-1", api_id="api-1", reason="subscription removed"
            ),
            {"a"},
        ),
        (enforcer_pb2.ConnectionRule(api_id="api-1", reason="API blocked"), {"a", "c"}),
        (enforcer_pb2.ConnectionRule(api_id="api-2", reason="API undeployed"), {"b"}),
        (enforcer_pb2.ConnectionRule(application_id="app-2", reason="application removed"), {"b"}),
        (enforcer_pb2.ConnectionRule(token_id="nobody"), set()),
        (enforcer_pb2.ConnectionRule(), set()),  # selects nothing in particular
    ],
)
def test_each_rule_evicts_exactly_the_entries_it_selects(
    rule: enforcer_pb2.ConnectionRule, evicted: set[str]
) -> None:
    cache = ready()
    entries = {
        "a": (key("a"), allow(), "api-1"),
        "b": (key("b", api="api-2"), allow("jti-2", "app-2"), "api-2"),
        "c": (key("c"), allow("jti-3", "app-3", key_type="SANDBOX"), "api-1"),
    }
    for k, verdict, api_id in entries.values():
        assert cache.put(k, verdict, api_id, NOW, WALL)
    assert cache.apply_rule(rule) == len(evicted)
    for name, (k, _, _) in entries.items():
        assert (cache.get(k, NOW) is None) == (name in evicted), name


def test_a_data_version_change_empties_it_and_stale_answers_are_not_stored() -> None:
    cache = ready()
    assert cache.put(key(), allow(), "api-1", NOW, WALL)
    assert cache.set_data_version(VERSION) == 0  # the same version again: nothing changes
    assert cache.get(key(), NOW) is not None
    assert cache.set_data_version("v2") == 1
    assert cache.get(key(), NOW) is None
    # an answer decided before the change (at v1) must not be cached under v2
    assert not cache.put(key(), allow(version=VERSION), "api-1", NOW, WALL)
    assert not cache.put(key(), allow(version=""), "api-1", NOW, WALL)
    assert cache.put(key(), allow(version="v2"), "api-1", NOW, WALL)


def test_a_route_version_change_empties_it() -> None:
    cache = ready()
    cache.set_route_version("r1")
    assert cache.put(key(), allow(), "api-1", NOW, WALL)
    assert cache.set_route_version("r1") == 0
    assert cache.set_route_version("r2") == 1
    assert cache.get(key(), NOW) is None


def test_disabled_while_the_rules_stream_is_down() -> None:
    cache = ready()
    assert cache.put(key(), allow(), "api-1", NOW, WALL)
    assert cache.stream_lost() == 1
    assert not cache.usable
    assert not cache.put(key(), allow(), "api-1", NOW, WALL)
    assert cache.get(key(), NOW) is None
    assert (cache.hits, cache.misses) == (0, 0)  # bypassed, not missed
    cache.stream_opened()
    assert not cache.usable  # until the enforcer announces its data version again
    cache.set_data_version(VERSION)
    assert cache.usable and cache.get(key(), NOW) is None
    assert cache.put(key(), allow(), "api-1", NOW, WALL)


def test_switched_off_by_a_zero_ttl_or_size() -> None:
    for cache in (ready(ttl=0), ready(capacity=0)):
        assert not cache.usable
        assert not cache.put(key(), allow(), "api-1", NOW, WALL)
        assert cache.get(key(), NOW) is None
    with pytest.raises(ValueError):
        DecisionCache(-1, 10)


def test_bounded_size_drops_the_least_recently_used() -> None:
    cache = ready(capacity=2)
    for name in ("a", "b"):
        assert cache.put(key(name), allow(name), "api-1", NOW, WALL)
    assert cache.get(key("a"), NOW) is not None  # "b" is now the least recently used
    assert cache.put(key("c"), allow("c"), "api-1", NOW, WALL)
    assert len(cache) == 2 and cache.evicted["capacity"] == 1
    assert cache.get(key("b"), NOW) is None
    assert cache.get(key("a"), NOW) is not None and cache.get(key("c"), NOW) is not None
    # an evicted entry no longer answers to rules either (its index went with it)
    assert cache.apply_rule(enforcer_pb2.ConnectionRule(token_id="b")) == 0
