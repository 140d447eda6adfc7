"""Which API and topic a handshake path belongs to: the router's pure route matcher."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wsgate_common.resources import DEFAULT_VHOST
from wsgate_proto import config_pb2

_FORBIDDEN_SEGMENTS = frozenset((".", "..", "%2e", "%2e%2e", ".%2e", "%2e."))


class BadPath(ValueError):
    """A request path the router refuses outright (400), e.g. one with ``..``."""


def split_path(path: str) -> tuple[str, ...]:
    """Split an absolute request path into segments; empty segments collapse.

    Raises:
        BadPath: dot segments (plain or percent-encoded), encoded slashes or backslashes.
    """
    if not path.startswith("/"):
        raise BadPath("path must start with '/'")
    if "\\" in path:
        raise BadPath("backslash in path")
    segments = tuple(seg for seg in path.split("/") if seg)
    for seg in segments:
        low = seg.lower()
        if low in _FORBIDDEN_SEGMENTS or "%2f" in low or "%5c" in low or "%00" in low:
            raise BadPath(f"forbidden path segment {seg!r}")
    return segments


@dataclass(frozen=True, slots=True)
class Match:
    route: config_pb2.Route
    topic: config_pb2.RouteTopic
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Topic:
    topic: config_pb2.RouteTopic
    # Each segment is a literal, or a parameter name when the matching flag is set.
    segments: tuple[str, ...]
    is_param: tuple[bool, ...]
    wildcard: bool  # ends with "/*": matches any rest, including nothing

    def match(self, rest: tuple[str, ...]) -> dict[str, str] | None:
        fixed = len(self.segments)
        if len(rest) < fixed or (not self.wildcard and len(rest) != fixed):
            return None
        params: dict[str, str] = {}
        for seg, want, is_param in zip(rest, self.segments, self.is_param, strict=False):
            if is_param:
                params[want] = seg
            elif seg != want:
                return None
        return params


def _compile_topic(topic: config_pb2.RouteTopic) -> _Topic:
    segments = [seg for seg in topic.path.split("/") if seg]
    wildcard = bool(segments) and segments[-1] == "*"
    if wildcard:
        segments.pop()
    if "*" in segments:
        raise ValueError(f"topic {topic.path!r}: '*' is only allowed as the last segment")
    is_param = tuple(seg.startswith("{") and seg.endswith("}") and len(seg) > 2 for seg in segments)
    names = tuple(seg[1:-1] if p else seg for seg, p in zip(segments, is_param, strict=True))
    return _Topic(topic, names, is_param, wildcard)


def _specificity(topic: _Topic) -> tuple[int, int, int]:
    """Sort key: exact before parameterised before wildcard, longer before shorter."""
    literals = sum(1 for p in topic.is_param if not p)
    return (topic.wildcard, -len(topic.segments), -literals)


@dataclass(frozen=True, slots=True)
class _Api:
    route: config_pb2.Route
    base: tuple[str, ...]
    topics: tuple[_Topic, ...]


class RouteTable:
    """Immutable lookup structure built from one xDS snapshot of routes.

    Raises:
        ValueError: (from the constructor) a route with an invalid base path or topic.
    """

    __slots__ = ("_by_vhost", "size")

    def __init__(self, routes: Iterable[config_pb2.Route] = ()) -> None:
        by_vhost: dict[str, list[_Api]] = {}
        self.size = 0
        for route in routes:
            try:
                base = split_path(route.base_path or "/")
            except BadPath as exc:
                raise ValueError(f"route {route.api_id!r}: bad base path: {exc}") from None
            topics = sorted((_compile_topic(t) for t in route.topics), key=_specificity)
            vhost = (route.vhost or DEFAULT_VHOST).lower()
            by_vhost.setdefault(vhost, []).append(_Api(route, base, tuple(topics)))
            self.size += 1
        for apis in by_vhost.values():
            apis.sort(key=lambda api: -len(api.base))  # longest base path wins
        self._by_vhost = {vhost: tuple(apis) for vhost, apis in by_vhost.items()}

    def match(self, host: str, path: str) -> Match | None:
        """Find the API and topic for ``path`` on ``host`` (no port), or None.

        Raises:
            BadPath: the path is refused before any lookup.
        """
        segments = split_path(path)
        host = host.lower()
        found = self._match_in(self._by_vhost.get(host, ()), segments)
        if found is None and host != DEFAULT_VHOST:
            found = self._match_in(self._by_vhost.get(DEFAULT_VHOST, ()), segments)
        return found

    @staticmethod
    def _match_in(apis: tuple[_Api, ...], segments: tuple[str, ...]) -> Match | None:
        for api in apis:
            n = len(api.base)
            if segments[:n] != api.base:
                continue
            rest = segments[n:]
            for topic in api.topics:
                params = topic.match(rest)
                if params is not None:
                    return Match(api.route, topic.topic, params)
        return None


def host_without_port(host: str) -> str:
    """``example.com:9090`` -> ``example.com``; ``[::1]:9090`` -> ``::1``."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, _, _ = host.partition(":")
    return name
