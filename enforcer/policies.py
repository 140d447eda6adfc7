"""The enforcer's view of deployed APIs: the xDS handler for ApiPolicy resources.

Each update is a complete set (state of the world). It is built aside and swapped in one
assignment, so a rejected update (NACK) leaves the last good set serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from wsgate_common.resources import API_POLICY_TYPE_URL
from wsgate_proto import config_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiEntry:
    """One API's policy with its topics indexed by path."""

    api: config_pb2.ApiPolicy
    topics: Mapping[str, config_pb2.TopicPolicy]


@dataclass(frozen=True)
class PolicySet:
    """Every API this enforcer's label serves, at one xDS version."""

    version: str
    apis: Mapping[str, ApiEntry]


EMPTY = PolicySet(version="", apis=MappingProxyType({}))


def build_policy_set(version: str, resources: Sequence[any_pb2.Any]) -> PolicySet:
    """Unpack and index ApiPolicy resources.

    Raises:
        ValueError: a resource is of another type, does not parse, has no api_id, or repeats
            an api_id or a topic path.
    """
    apis: dict[str, ApiEntry] = {}
    for index, resource in enumerate(resources):
        if resource.type_url != API_POLICY_TYPE_URL:
            raise ValueError(f"resource #{index} has type {resource.type_url!r}")
        policy = config_pb2.ApiPolicy()
        try:
            policy.ParseFromString(resource.value)
        except DecodeError as exc:
            raise ValueError(f"resource #{index} is not an ApiPolicy: {exc}") from exc
        if not policy.api_id:
            raise ValueError(f"resource #{index} has no api_id")
        if policy.api_id in apis:
            raise ValueError(f"api_id {policy.api_id!r} appears twice")
        topics: dict[str, config_pb2.TopicPolicy] = {}
        for topic in policy.topics:
            if topic.path in topics:
                raise ValueError(f"API {policy.api_id!r} lists topic {topic.path!r} twice")
            topics[topic.path] = topic
        apis[policy.api_id] = ApiEntry(api=policy, topics=MappingProxyType(topics))
    return PolicySet(version=version, apis=MappingProxyType(apis))


class PolicyStore:
    """Holds the current :class:`PolicySet`; its :meth:`apply` is the xDS handler."""

    def __init__(self) -> None:
        self.current: PolicySet = EMPTY
        self.applied_once = False

    def apply(self, version: str, resources: list[any_pb2.Any]) -> None:
        """Replace every policy with ``resources``; raise (NACK) and keep the old set if bad."""
        new = build_policy_set(version, resources)
        self.current = new
        self.applied_once = True
        log.info("applied ApiPolicy version %s (%d APIs)", version, len(new.apis))

    def get(self, api_id: str) -> ApiEntry | None:
        return self.current.apis.get(api_id)
