"""The live-connection index: rules find exactly the connections matching all their selectors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.registry import ConnectionRegistry, Identity, selects


def registry_of(**conns: Identity) -> ConnectionRegistry[str]:
    reg: ConnectionRegistry[str] = ConnectionRegistry()
    for name, ident in conns.items():
        reg.add(name, ident)
    return reg


A = Identity.of("jti-a", "app1", "api1", "PRODUCTION")
B = Identity.of("jti-b", "app1", "api2", "sandbox")
C = Identity.of("jti-c", "app2", "api1", "PRODUCTION")
ANON = Identity.of("", "", "api1", "")  # an unsecured topic: only the API is known


def test_match_by_each_selector_and_combinations() -> None:
    reg = registry_of(a=A, b=B, c=C, anon=ANON)
    assert sorted(reg.match(token_id="jti-a")) == ["a"]
    assert sorted(reg.match(application_id="app1")) == ["a", "b"]
    assert sorted(reg.match(api_id="api1")) == ["a", "anon", "c"]
    assert sorted(reg.match(application_id="app1", api_id="api1")) == ["a"]
    assert sorted(reg.match(application_id="app1", key_type="SANDBOX")) == ["b"]
    assert sorted(reg.match(key_type="production")) == ["a", "c"]
    assert reg.match(token_id="jti-a", api_id="api2") == []
    assert reg.match(token_id="unknown") == []


def test_a_rule_without_selectors_matches_nothing() -> None:
    reg = registry_of(a=A, anon=ANON)
    assert reg.match() == []
    assert not selects(A, "", "", "", "")


def test_remove_is_complete_and_idempotent() -> None:
    reg = registry_of(a=A, b=B)
    reg.remove("a")
    reg.remove("a")
    assert len(reg) == 1 and "a" not in reg
    assert reg.match(application_id="app1") == ["b"]
    assert all(not bucket or "a" not in bucket for idx in reg._index for bucket in idx.values())
    reg.remove("b")
    assert all(not idx for idx in reg._index)  # no empty buckets left behind


def test_re_adding_replaces_the_identity() -> None:
    reg = registry_of(a=A)
    reg.add("a", C)
    assert reg.match(token_id="jti-a") == []
    assert reg.match(token_id="jti-c") == ["a"]


values = st.sampled_from(["", "x", "y"])
identities = st.builds(Identity.of, values, values, values, st.sampled_from(["", "PRODUCTION"]))


@settings(max_examples=200, deadline=None)
@given(
    conns=st.lists(identities, max_size=15),
    rule=st.tuples(values, values, values, st.sampled_from(["", "production", "SANDBOX"])),
    removed=st.sets(st.integers(min_value=0, max_value=14)),
)
def test_match_equals_a_linear_scan(
    conns: list[Identity], rule: tuple[str, str, str, str], removed: set[int]
) -> None:
    reg: ConnectionRegistry[int] = ConnectionRegistry()
    for i, ident in enumerate(conns):
        reg.add(i, ident)
    for i in removed:
        reg.remove(i)
    expected = {i for i, ident in enumerate(conns) if i not in removed and selects(ident, *rule)}
    assert set(reg.match(*rule)) == expected
