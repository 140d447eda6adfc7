"""The core's check of a backend's 101 (core.c plain_101, Core.connect's fast start) against
router.http11's: whenever the core would relay on a response head by itself, Python would have
accepted the same head and answered the client exactly what the core sends (no extension, no
subprotocol chosen by the backend). Random heads built from pieces that matter to either
parser, and random byte edits of good heads."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import http11
from tests.procs import import_or_unavailable

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = http11.accept_key(KEY).encode()


@pytest.fixture(scope="module")
def core() -> Any:
    return import_or_unavailable("router._core")


def python_starts(head: bytes) -> bool:
    """What Python's path concludes: a checked 101 whose answer depends on nothing the
    backend said (the only case the core may take)."""
    try:
        response = http11.parse_response_head(head)
        http11.check_backend_response(response, KEY)
    except (ValueError, http11.HttpError):
        return False
    return (
        "sec-websocket-extensions" not in response.headers
        and "sec-websocket-protocol" not in response.headers
    )


GOOD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
)

STATUS = [
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 101",
    b"HTTP/1.1 101 ",
    b"HTTP/1.0 101 OK",
    b"HTTP/1.1  101 x",
    b"HTTP/1.1 1010",
    b"HTTP/1.1 200 OK",
    b"http/1.1 101 x",
    b"HTTP/1.1 101\tx",
    b"HTTP/2 101",
]
NAMES = [
    b"Upgrade",
    b"upgrade",
    b"UPGRADE",
    b"Connection",
    b"connection",
    b"Sec-WebSocket-Accept",
    b"sec-websocket-accept",
    b"Sec-WebSocket-Extensions",
    b"Sec-WebSocket-Protocol",
    b"X-Other",
    b" Upgrade",
    b"Upgrade ",
    b"Up grade",
    b"",
]
VALUES = [
    b"websocket",
    b"WebSocket",
    b" websocket ",
    b"\twebsocket",
    b"websockets",
    b"h2c, websocket",
    b"websocket,",
    b",websocket",
    b"web socket",
    b"Upgrade",
    b"upgrade",
    b"keep-alive, Upgrade",
    b"keep-alive,upgrade ",
    b"\x0bupgrade",
    b"upgrade\xa0",
    ACCEPT,
    b" " + ACCEPT + b"\t",
    ACCEPT + b"x",
    ACCEPT[:-1],
    b"",
    b"x\ry",
    b"x\ny",
    b"x\x00y",
    b"\xff",
]


def line(name: bytes, value: bytes, sep: bytes) -> bytes:
    return name + sep + value


@settings(max_examples=1000, deadline=None)
@given(
    status=st.sampled_from(STATUS),
    lines=st.lists(
        st.tuples(
            st.sampled_from(NAMES), st.sampled_from(VALUES), st.sampled_from([b": ", b":", b""])
        ),
        max_size=6,
    ),
)
def test_random_heads(core: Any, status: bytes, lines: list[tuple[bytes, bytes, bytes]]) -> None:
    head = b"\r\n".join([status, *(line(*parts) for parts in lines)]) + b"\r\n\r\n"
    if core.plain_101(head, ACCEPT):
        assert python_starts(head), head


def test_byte_edits_of_a_good_head(core: Any) -> None:
    assert core.plain_101(GOOD, ACCEPT) and python_starts(GOOD)
    rng = random.Random(11)
    alphabet = b"\r\n\x00\t :,aA1-xX\xa0\x0b"
    taken = 0
    for _ in range(30_000):
        head = bytearray(GOOD)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(head) - 4)  # the final CRLF CRLF stays
            edit = rng.randrange(3)
            if edit == 0:
                head[at] = rng.choice(alphabet)
            elif edit == 1:
                del head[at]
            else:
                head.insert(at, rng.choice(alphabet))
        if core.plain_101(bytes(head), ACCEPT):
            taken += 1
            assert python_starts(bytes(head)), bytes(head)
    assert taken > 0  # (some edits keep it good: the check is not refusing everything)


def test_what_the_core_leaves_to_python(core: Any) -> None:
    """Heads Python accepts but whose answer depends on them, or that the core declines to
    judge (HTTP/1.0, repeated accept): the core never starts them."""
    accept_line = b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n"
    for head in (
        GOOD[:-2] + b"Sec-WebSocket-Extensions: x\r\n\r\n",
        GOOD[:-2] + b"Sec-WebSocket-Protocol: chat\r\n\r\n",
        GOOD[:-2] + b"sec-websocket-protocol:\r\n\r\n",
        GOOD.replace(b"HTTP/1.1", b"HTTP/1.0"),
        GOOD[:-2] + accept_line + b"\r\n",
        GOOD[:-2] + b"X-A: 1\r\n" * 98 + b"\r\n",
    ):
        assert not core.plain_101(head, ACCEPT), head
    assert not core.plain_101(GOOD, ACCEPT[:-1] + b"x")
    assert not core.plain_101(GOOD[:-2], ACCEPT)  # no end of head
    assert not core.plain_101(b"", ACCEPT)
