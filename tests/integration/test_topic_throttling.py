"""A topic's own throttling policy (WSO2 ``operations[].throttlingPolicy``) is enforced by the
router: the publisher gives ``/rooms/{roomId}`` an advanced policy of 6 messages a minute, counted
in both directions as WSO2 counts streaming limits (an echoed message is two); every connection to
that topic of the API shares the count and the 7th message closes the socket with 1008, while the
API's other topic stays unlimited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.integration.apim_flow import ADMIN, Apim, apim, expect, open_ws, watch_close, ws_api_body
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

POLICY = "Topic6PerMin"


@pytest.fixture(scope="module")
def stack(relay_stack: Stack) -> Stack:
    """The stack with its router on each relay path (tests/relay_paths.py)."""
    return relay_stack


@pytest.fixture(scope="module")
def am(stack: Stack) -> Iterator[Apim]:
    with apim(stack) as session:
        yield session


async def test_topic_policy_is_a_quota_shared_by_the_topic_only(stack: Stack, am: Apim) -> None:
    policy = {
        "policyName": POLICY,
        "defaultLimit": {
            "type": "EVENTCOUNTLIMIT",
            "eventCount": {"eventCount": 6, "timeUnit": "min", "unitTime": 1},
        },
        "stopOnQuotaReach": True,
    }
    expect(am.http.post(f"{ADMIN}/throttling/policies/advanced", json=policy), 201)
    body = ws_api_body("TopicQuota", "/topicquota", stack.ports.echo, policies=("AsyncUnlimited",))
    for operation in body["operations"]:
        if operation["target"] == "/rooms/{roomId}":
            operation["throttlingPolicy"] = POLICY
    api_id = am.live_api(body)
    _, _, keys = am.subscribed_app("TopicQuotaApp", [api_id], tier="AsyncUnlimited")
    token = am.token(keys)
    rooms = f"{stack.ws}/topicquota/1.0.0/rooms/1"
    other_room = f"{stack.ws}/topicquota/1.0.0/rooms/2"  # same topic template, same counter
    notifications = f"{stack.ws}/topicquota/1.0.0/notifications"

    async with open_ws(rooms, token) as first:  # open_ws sends and reads back one: messages 1-2
        await first.send("two")  # 3, and its echo 4
        assert await asyncio.wait_for(first.recv(), 5) == "two"
        async with open_ws(other_room, token) as second:  # same topic, same counter: 5-6
            await second.send("four")  # the 7th message of the topic
            closed = await asyncio.wait_for(watch_close(second), 5)
        print(f"\n7th message on the topic: close {closed.code} {closed.reason!r}")
        assert closed.code == 1008, closed
        assert "throttled" in closed.reason.lower(), closed

    headers = {"Authorization": f"Bearer {token}"}
    async with connect(notifications, additional_headers=headers, open_timeout=10) as free:
        for n in range(10):  # the other topic has no policy of its own
            await free.send(f"n{n}")
            assert await asyncio.wait_for(free.recv(), 5) == f"n{n}"
