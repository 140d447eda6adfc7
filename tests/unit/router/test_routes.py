"""Route matching: base paths, topic templates, vhost fallback, path hygiene."""

from __future__ import annotations

import pytest

from router.routes import BadPath, RouteTable, host_without_port, split_path
from wsgate_proto import config_pb2


def route(api_id: str, base: str, *topics: str, vhost: str = "localhost") -> config_pb2.Route:
    return config_pb2.Route(
        api_id=api_id,
        api_name=api_id,
        api_version="1.0.0",
        vhost=vhost,
        base_path=base,
        topics=[config_pb2.RouteTopic(path=t, production_url=f"ws://b/{api_id}") for t in topics],
    )


TABLE = RouteTable(
    [
        route("echo", "/echo/1.0.0", "/"),
        route("chat", "/chat/1.0.0", "/notifications", "/rooms/{room}", "/rooms/lobby", "/*"),
        route("chat-deep", "/chat/1.0.0/admin", "/"),
        route("other", "/echo/1.0.0", "/", vhost="api.example.com"),
    ]
)


def found(host: str, path: str) -> tuple[str, str, dict[str, str]] | None:
    m = TABLE.match(host, path)
    return None if m is None else (m.route.api_id, m.topic.path, m.params)


def test_base_path_itself() -> None:
    assert found("localhost", "/echo/1.0.0") == ("echo", "/", {})
    assert found("localhost", "/echo/1.0.0/") == ("echo", "/", {})


def test_prefix_only_on_segment_boundary() -> None:
    assert found("localhost", "/echo/1.0.01") is None
    assert found("localhost", "/echo/1.0.0/extra") is None


def test_exact_param_and_wildcard_topics() -> None:
    assert found("localhost", "/chat/1.0.0/notifications") == ("chat", "/notifications", {})
    assert found("localhost", "/chat/1.0.0/rooms/r1") == ("chat", "/rooms/{room}", {"room": "r1"})
    assert found("localhost", "/chat/1.0.0/rooms/lobby") == ("chat", "/rooms/lobby", {})
    assert found("localhost", "/chat/1.0.0/rooms/a/b") == ("chat", "/*", {})
    assert found("localhost", "/chat/1.0.0") == ("chat", "/*", {})


def test_longest_base_path_wins() -> None:
    assert found("localhost", "/chat/1.0.0/admin") == ("chat-deep", "/", {})


def test_vhost_and_default_fallback() -> None:
    assert found("api.example.com", "/echo/1.0.0") == ("other", "/", {})
    assert found("API.example.com", "/echo/1.0.0") == ("other", "/", {})
    assert found("127.0.0.1", "/echo/1.0.0") == ("echo", "/", {})
    assert found("api.example.com", "/chat/1.0.0/notifications") == ("chat", "/notifications", {})


def test_no_match() -> None:
    assert found("localhost", "/nope") is None
    assert found("localhost", "/") is None


@pytest.mark.parametrize(
    "path", ["/echo/../x", "/echo/./x", "/a/%2e%2E/b", "/a%2Fb", "/a\\b", "relative", "/a/%00"]
)
def test_dangerous_paths_are_refused(path: str) -> None:
    with pytest.raises(BadPath):
        TABLE.match("localhost", path)


def test_split_path_collapses_slashes() -> None:
    assert split_path("//a///b/") == ("a", "b")


def test_bad_topic_template_rejected() -> None:
    with pytest.raises(ValueError):
        RouteTable([route("x", "/x", "/a/*/b")])
    with pytest.raises(ValueError):
        RouteTable([route("x", "/x/../y", "/")])


@pytest.mark.parametrize(
    ("raw", "host"),
    [("localhost:9090", "localhost"), ("[::1]:9095", "::1"), ("example.com", "example.com")],
)
def test_host_without_port(raw: str, host: str) -> None:
    assert host_without_port(raw) == host
