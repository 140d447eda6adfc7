"""Request-head parsing, upgrade validation and response building (no I/O)."""

from __future__ import annotations

import base64
import json

import pytest

from router import http11
from router.http11 import HeadReader, HttpError

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_head(**extra: str) -> bytes:
    headers = {
        "Host": "localhost:9090",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    headers.update(extra)
    lines = ["GET /echo/1.0.0/rooms/a?x=1 HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_accept_key_rfc6455_example() -> None:
    assert http11.accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_upgrade_request() -> None:
    req = http11.parse_request_head(upgrade_head(**{"X-Dup": "a"}))
    assert req.method == "GET"
    assert req.path == "/echo/1.0.0/rooms/a"
    assert req.query == "x=1"
    assert req.headers["host"] == "localhost:9090"
    assert http11.is_upgrade(req)
    assert http11.validate_upgrade(req) == KEY


def test_repeated_headers_are_joined() -> None:
    req = http11.parse_request_head(b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n")
    assert req.headers["a"] == "1, 2"


def test_head_reader_across_chunks_keeps_rest() -> None:
    data = upgrade_head() + b"\x81\x80rest"
    reader = HeadReader()
    result = None
    for i in range(len(data)):
        result = reader.feed(data[i : i + 1])
        if result is not None:
            break
    assert result is not None
    head, rest = result
    assert head == upgrade_head()
    assert rest == b""  # fed byte by byte: nothing after the head arrived yet
    head2, rest2 = HeadReader().feed(data) or (b"", b"")
    assert head2 == upgrade_head() and rest2 == b"\x81\x80rest"


def test_head_too_large_is_431() -> None:
    reader = HeadReader()
    with pytest.raises(HttpError) as info:
        reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 17000)
    assert info.value.status == 431


def test_too_many_headers_is_431() -> None:
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(HttpError) as info:
        http11.parse_request_head(head)
    assert info.value.status == 431


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(HttpError) as info:
        http11.parse_request_head(head)
    assert info.value.status == 400


def test_http2_version_is_505() -> None:
    with pytest.raises(HttpError) as info:
        http11.parse_request_head(b"GET / HTTP/2.0\r\n\r\n")
    assert info.value.status == 505


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Connection": "keep-alive"}, 400),
        ({"Sec-WebSocket-Key": "short"}, 400),
        ({"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}, 400),
        ({"Sec-WebSocket-Version": "8"}, 426),
    ],
)
def test_invalid_upgrades(change: dict[str, str], status: int) -> None:
    req = http11.parse_request_head(upgrade_head(**change))
    with pytest.raises(HttpError) as info:
        http11.validate_upgrade(req)
    assert info.value.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers
        assert b"Sec-WebSocket-Version: 13\r\n" in http11.http_error_response(info.value)


def test_upgrade_must_be_get() -> None:
    req = http11.parse_request_head(upgrade_head().replace(b"GET", b"POST", 1))
    with pytest.raises(HttpError):
        http11.validate_upgrade(req)


def test_error_response_shape() -> None:
    raw = http11.error_response(404, 404, "Not Found", "No matching resource")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Content-Type: application/json" in head
    assert b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert json.loads(body) == {
        "code": 404,
        "message": "Not Found",
        "description": "No matching resource",
    }


def test_switching_protocols_echoes_backend_choices() -> None:
    raw = http11.switching_protocols("abc", "chat", "permessage-deflate")
    assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: abc\r\n" in raw
    assert b"Sec-WebSocket-Protocol: chat\r\n" in raw
    assert b"Sec-WebSocket-Extensions: permessage-deflate\r\n" in raw
    assert b"Sec-WebSocket-Protocol" not in http11.switching_protocols("abc")


def test_backend_response_check() -> None:
    good = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    http11.check_backend_response(http11.parse_response_head(good), KEY)
    with pytest.raises(ValueError, match="wrong"):
        http11.check_backend_response(http11.parse_response_head(good), "AAAAAAAAAAAAAAAAAAAAAA==")
    refused = http11.parse_response_head(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="403"):
        http11.check_backend_response(refused, KEY)
    with pytest.raises(ValueError):
        http11.parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_extension_offers_without_permessage_deflate() -> None:
    offer = "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame,x-foo; a=1"
    assert http11.extension_names(offer) == [
        "permessage-deflate",
        "x-webkit-deflate-frame",
        "x-foo",
    ]
    assert http11.without_extension(offer, "permessage-deflate") == (
        "x-webkit-deflate-frame, x-foo; a=1"
    )
    assert (
        http11.without_extension(
            "PerMessage-Deflate; server_no_context_takeover", "permessage-deflate"
        )
        == ""
    )
    assert http11.without_extension("", "permessage-deflate") == ""
    assert http11.without_extension("x-foo", "permessage-deflate") == "x-foo"


def _reference_parse(head: bytes) -> object:
    """The request head parser as it was before it was made faster (issue 11): the new one
    must agree with it on every input, errors included."""
    token = frozenset(
        b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    )
    lines = head.split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return (400, "Empty request.")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return (400, "Malformed request line.")
    method_b, target_b, version = parts
    if not method_b or not token.issuperset(method_b):
        return (400, "Malformed request method.")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return (505 if version.startswith(b"HTTP/") else 400, "version")
    if not target_b.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in target_b):
        return (400, "The request target must be an absolute path.")
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        return (400, "Folded header lines are not allowed.")
    if len(lines) - 1 > http11.MAX_HEADERS:
        return (431, "too many")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not token.issuperset(name):
            return (400, "Malformed header line.")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if any(c in text for c in "\r\n\x00"):
            return (400, "Invalid character in a header value.")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = target_b.decode("ascii")
    path, _, query = target.partition("?")
    return (method_b.decode(), target, path, query, headers)


def test_the_faster_head_parser_agrees_with_the_reference_on_random_heads() -> None:
    import random

    rng = random.Random(7)
    pieces = [
        b"GET",
        b"POST",
        b" ",
        b"/",
        b"/a?b=c",
        b"HTTP/1.1",
        b"HTTP/2",
        b"\r\n",
        b"Host: x",
        b"X-A:  v \t",
        b"Bad Name: v",
        b": v",
        b"a\x00b",
        b"\n",
        b"\r",
        b"\x7f",
        b"\xe9",
        b"\t",
        b"Upgrade: websocket",
        b"x-a: second",
        b":",
        b"~!#$%&'*+-.^_`|: ok",
    ]
    for _ in range(20_000):
        if rng.random() < 0.5:
            head = b"GET /p?q=1 HTTP/1.1\r\n"
        else:
            head = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) + b"\r\n"
        head += b"".join(
            b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) + b"\r\n"
            for _ in range(rng.randint(0, 4))
        )
        head += b"\r\n"
        want = _reference_parse(head)
        try:
            got = http11.parse_request_head(head)
        except http11.HttpError as exc:
            assert isinstance(want, tuple) and len(want) == 2, (head, want, exc.description)
            assert want[0] == exc.status, (head, want, exc.description)
            if want[1] not in ("version", "too many"):
                assert want[1] == exc.description, (head, want, exc.description)
            continue
        assert want == (got.method, got.target, got.path, got.query, got.headers), head


def test_the_101_answer_is_built_as_before() -> None:
    answer = http11.switching_protocols("acc=", "chat", "permessage-deflate")
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: acc=\r\nSec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    assert http11.switching_protocols("a").endswith(b"Sec-WebSocket-Accept: a\r\n\r\n")
