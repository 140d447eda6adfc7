"""The pure compile step: WSO2 semantics resolved into Route/ApiPolicy per label."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.compile import (
    CompileError,
    compile_api,
    join_url,
    merge_operations,
    normalize_topic,
    resolve_base_path,
)
from adapter.project import load_dir
from wsgate_proto import definition_pb2

Endpoint = definition_pb2.Endpoint
Operation = definition_pb2.Operation
Deployment = definition_pb2.Deployment

ECHO = Path(__file__).resolve().parents[2] / "data" / "projects" / "EchoWebSocket-1.0.0"


def _api(**fields: object) -> definition_pb2.ApiDefinition:
    base: dict[str, object] = {
        "id": "A:1",
        "name": "A",
        "version": "1",
        "context": "/a",
        "api_type": "WS",
        "production_endpoint": definition_pb2.Endpoint(url="ws://b:1"),
    }
    base.update(fields)
    return definition_pb2.ApiDefinition(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("context", "version", "expected"),
    [
        ("/echo", "1.0.0", "/echo/1.0.0"),
        ("echo", "1.0.0", "/echo/1.0.0"),
        ("/echo/", "v2", "/echo/v2"),
        ("/echo/{version}", "1.0.0", "/echo/1.0.0"),
        ("/{version}/echo", "3", "/3/echo"),
        ("/a//b", "1", "/a/b/1"),
    ],
)
def test_resolve_base_path(context: str, version: str, expected: str) -> None:
    assert resolve_base_path(context, version) == expected


@pytest.mark.parametrize("context", ["", "/", "  ", "/a/{other}", "/a?x=1", "/a/../b"])
def test_resolve_base_path_rejects(context: str) -> None:
    with pytest.raises(CompileError) as info:
        resolve_base_path(context, "1")
    assert info.value.field == "context"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/notifications", "/notifications"),
        ("notifications", "/notifications"),
        ("/rooms/{room}/", "/rooms/{room}"),
        ("*", "/*"),
        ("/*", "/*"),
        ("/a/*", "/a/*"),
        ("", "/"),
        ("/", "/"),
    ],
)
def test_normalize_topic(target: str, expected: str) -> None:
    assert normalize_topic(target) == expected


@pytest.mark.parametrize("target", ["/a/*/b", "/a b", "/x?y", "/{1bad}", "/a/.."])
def test_normalize_topic_rejects(target: str) -> None:
    with pytest.raises(CompileError):
        normalize_topic(target)


@pytest.mark.parametrize(
    ("endpoint", "mapping", "expected"),
    [
        ("ws://b:1", "", "ws://b:1"),
        ("ws://b:1/", "", "ws://b:1/"),
        ("ws://b:1", "/m", "ws://b:1/m"),
        ("ws://b:1", "m", "ws://b:1/m"),
        ("ws://b:1/base/", "/m", "ws://b:1/base/m"),
        ("ws://b:1/base", "m/n", "ws://b:1/base/m/n"),
        ("ws://b:1/base?k=1", "/m", "ws://b:1/base/m?k=1"),
        ("wss://b/base", "/m?x=2", "wss://b/base/m?x=2"),
        ("ws://b/base?k=1", "/m?x=2", "ws://b/base/m?k=1&x=2"),
    ],
)
def test_join_url(endpoint: str, mapping: str, expected: str) -> None:
    assert join_url(endpoint, mapping) == expected


def test_publish_wins_over_subscribe_in_either_order() -> None:
    sub = definition_pb2.Operation(target="/t", verb="SUBSCRIBE", uri_mapping="/sub", scopes=["s"])
    pub = definition_pb2.Operation(target="t", verb="PUBLISH", uri_mapping="/pub", auth_type="None")
    for ops in ([sub, pub], [pub, sub]):
        merged = merge_operations(ops)
        assert list(merged) == ["/t"]
        assert merged["/t"].uri_mapping == "/pub"


def test_echo_project_compiles() -> None:
    compiled = compile_api(load_dir(ECHO))
    assert list(compiled) == ["Default"]
    route, policy = compiled["Default"].route, compiled["Default"].policy
    assert route.base_path == policy.base_path == "/echowebsocket/1.0.0"
    assert route.vhost == policy.vhost == "localhost"
    topics = {t.path: t for t in route.topics}
    assert sorted(topics) == ["/*", "/notifications", "/public", "/rooms/{room}"]
    assert topics["/notifications"].production_url == "ws://localhost:8765/notify"  # publish
    assert topics["/notifications"].sandbox_url == "ws://localhost:8766/notify"
    assert topics["/rooms/{room}"].production_url == "ws://localhost:8765/rooms"
    assert topics["/*"].production_url == "ws://localhost:8765"
    rules = {t.path: t for t in policy.topics}
    assert [t.path for t in policy.topics] == [t.path for t in route.topics]
    assert rules["/public"].secured is False
    assert rules["/notifications"].secured is True
    assert list(rules["/notifications"].scopes) == ["notifications:read"]
    assert policy.has_production_endpoint and policy.has_sandbox_endpoint
    assert list(policy.tiers) == ["AsyncUnlimited"]
    assert policy.lifecycle_status == "PUBLISHED"
    assert route.api_id == policy.api_id == "EchoWebSocket:1.0.0"


def test_no_operations_means_one_catch_all_secured_topic() -> None:
    compiled = compile_api(_api(sandbox_endpoint=definition_pb2.Endpoint()))
    [topic] = compiled["Default"].route.topics
    assert (topic.path, topic.production_url, topic.sandbox_url) == ("/*", "ws://b:1", "")
    [rule] = compiled["Default"].policy.topics
    assert rule.secured is True
    assert compiled["Default"].policy.has_sandbox_endpoint is False


def test_labels_and_vhosts() -> None:
    api = _api(
        deployments=[
            definition_pb2.Deployment(name="Default"),
            definition_pb2.Deployment(name="Edge", vhost="Edge.Example.com"),
        ]
    )
    compiled = compile_api(api)
    assert {label: r.route.vhost for label, r in compiled.items()} == {
        "Default": "localhost",
        "Edge": "edge.example.com",
    }


def test_ca_pem_only_where_endpoint_exists() -> None:
    api = _api(production_endpoint=definition_pb2.Endpoint(url="wss://b", ca_cert_pem="PEM"))
    [topic] = compile_api(api)["Default"].route.topics
    assert topic.production_ca_pem == "PEM"
    assert topic.sandbox_ca_pem == ""


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": ""}, "id"),
        ({"name": " "}, "name"),
        ({"version": ""}, "version"),
        ({"version": "1/2"}, "version"),
        ({"context": ""}, "context"),
        ({"api_type": "HTTP"}, "api_type"),
        ({"production_endpoint": Endpoint()}, "endpoints"),
        ({"production_endpoint": Endpoint(url="http://b")}, "production_endpoint.url"),
        ({"sandbox_endpoint": Endpoint(url="ws://b:99999")}, "sandbox_endpoint.url"),
        ({"operations": [Operation(target="/t", verb="GET")]}, "operations[/t].verb"),
        ({"deployments": [Deployment(name="bad label")]}, "deployments[0].name"),
        ({"deployments": [Deployment(name="L", vhost="a b")]}, "deployments[0].vhost"),
        (
            {
                "deployments": [
                    Deployment(name="L", vhost="a"),
                    Deployment(name="L", vhost="b"),
                ]
            },
            "deployments[1]",
        ),
    ],
)
def test_validation_errors_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(CompileError) as info:
        compile_api(_api(**fields))
    assert info.value.field == field


def test_security_schemes_cors_and_source_reach_the_policy() -> None:
    api = _api()
    api.security_scheme.extend(["API_KEY", "mutualssl", "oauth2", "api_key"])
    api.cors_configuration.cors_configuration_enabled = True
    api.cors_configuration.access_control_allow_origins.extend(
        ["https://App.example.com/", " https://app.example.com", "*", ""]
    )
    api.source = "control-plane"
    policy = compile_api(api)["Default"].policy
    assert list(policy.security_schemes) == ["api_key", "oauth2"]
    assert policy.cors.enabled is True
    assert list(policy.cors.allow_origins) == ["https://app.example.com", "*"]
    assert policy.source == "control-plane"


def test_no_usable_scheme_and_disabled_cors_compile_to_empty() -> None:
    api = _api()
    api.security_scheme.append("oauth_basic_auth_api_key_mandatory")
    api.cors_configuration.access_control_allow_origins.append("https://x.example")
    api.source = "adapter"
    policy = compile_api(api)["Default"].policy
    assert list(policy.security_schemes) == []
    assert policy.cors.enabled is False
    assert list(policy.cors.allow_origins) == ["https://x.example"]
    assert policy.source == "adapter"
