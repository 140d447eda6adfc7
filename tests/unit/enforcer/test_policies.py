from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from enforcer.policies import PolicyStore, build_policy_set
from wsgate_common.resources import API_POLICY_TYPE_URL, ROUTE_TYPE_URL
from wsgate_proto import config_pb2


def packed(api_id: str, *paths: str) -> any_pb2.Any:
    policy = config_pb2.ApiPolicy(
        api_id=api_id,
        topics=[config_pb2.TopicPolicy(path=p, secured=True) for p in paths],
    )
    resource = any_pb2.Any()
    resource.Pack(policy)
    return resource


def test_pack_uses_the_agreed_type_url() -> None:
    assert packed("a").type_url == API_POLICY_TYPE_URL


def test_build_indexes_apis_and_topics() -> None:
    built = build_policy_set("v1", [packed("a", "/x", "/y"), packed("b")])
    assert built.version == "v1"
    assert set(built.apis) == {"a", "b"}
    assert set(built.apis["a"].topics) == {"/x", "/y"}
    assert built.apis["a"].topics["/y"].secured


def test_wrong_type_is_rejected() -> None:
    route = any_pb2.Any()
    route.Pack(config_pb2.Route(api_id="a"))
    assert route.type_url == ROUTE_TYPE_URL
    with pytest.raises(ValueError, match="type"):
        build_policy_set("v", [route])


def test_garbage_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an ApiPolicy"):
        build_policy_set("v", [any_pb2.Any(type_url=API_POLICY_TYPE_URL, value=b"\xff\xff\xff")])


@pytest.mark.parametrize(
    "resources",
    [[packed("")], [packed("a"), packed("a")], [packed("a", "/x", "/x")]],
    ids=["no-id", "duplicate-api", "duplicate-topic"],
)
def test_inconsistent_sets_are_rejected(resources: list[any_pb2.Any]) -> None:
    with pytest.raises(ValueError):
        build_policy_set("v", resources)


def test_nack_keeps_last_good_state() -> None:
    store = PolicyStore()
    assert not store.applied_once
    store.apply("v1", [packed("a", "/x")])
    assert store.applied_once
    with pytest.raises(ValueError):
        store.apply("v2", [packed("b"), packed("b")])
    assert store.current.version == "v1"
    assert store.get("a") is not None
    assert store.get("b") is None


def test_new_state_replaces_old_entirely() -> None:
    store = PolicyStore()
    store.apply("v1", [packed("a")])
    store.apply("v2", [packed("b")])
    assert store.get("a") is None
    assert store.get("b") is not None
    store.apply("v3", [])
    assert store.get("b") is None
    assert store.applied_once
