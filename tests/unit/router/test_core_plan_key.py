"""The core's reading of a request head for handshake plans (plan.c hp_key_span, as
router._core.key_span) against router.http11's: a plan is only ever used for a head equal to
one Python accepted but for the Sec-WebSocket-Key value, so (1) every head the core takes has a
key Python takes, at the same place, and (2) two heads the core sees as "the same but the key"
parse to the same request in Python but for that key."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import http11
from router.http11 import HttpError

_core = pytest.importorskip("router._core")

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# values around the key that may or may not be one (whitespace kinds, lengths, padding)
keys = st.one_of(
    st.text(B64, min_size=22, max_size=22).map(lambda k: k + "=="),
    st.text(B64 + "= \t\x0b\x0c:", min_size=0, max_size=30),
    st.text(B64 + " \t\x0b:=!", min_size=22, max_size=22).map(lambda k: k + "=="),
    st.sampled_from(
        [KEY, KEY[:-1], KEY + "=", KEY[:-2] + "A=", " " + KEY, KEY + "\t", "\x0b" + KEY]
    ),
)
names = st.sampled_from(
    ["Sec-WebSocket-Key", "sec-websocket-key", "SEC-WEBSOCKET-KEY", "Sec-WebSocket-Key ", "X-Key"]
)
others = st.lists(
    st.sampled_from(
        [
            "Authorization: Bearer t",
            "Origin: http://a.example",
            "X-Request-ID: r1",
            " folded",
            "\tfolded",
            "Bad Line",
            "Sec-WebSocket-Protocol: chat",
        ]
    ),
    max_size=3,
)


def build(parts: list[tuple[str, str]], extra: list[str]) -> bytes:
    lines = [
        "GET /echo/1.0.0 HTTP/1.1",
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}:{value}" for name, value in parts]
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def python_key(head: bytes) -> str | None:
    try:
        return http11.validate_upgrade(http11.parse_request_head(head))
    except HttpError:
        return None


@given(st.lists(st.tuples(names, keys), min_size=0, max_size=3), others)
def test_a_head_the_core_takes_has_the_key_python_takes(
    parts: list[tuple[str, str]], extra: list[str]
) -> None:
    head = build(parts, extra)
    span = _core.key_span(head)
    if span is None:
        return
    vs, ve, at = span
    key = head[at : at + 24].decode()
    assert head[vs:ve].strip(b" \t").decode() == key
    assert len(base64.b64decode(key, validate=True)) == 16
    if python_key(head) is not None:  # (the rest of the head may still be refused by Python)
        assert python_key(head) == key


@given(
    st.text(B64, min_size=22, max_size=22),
    st.text(B64, min_size=22, max_size=22),
    st.sampled_from([(" ", ""), ("", " "), ("\t", ""), ("  ", ""), (" ", "\t")]),
    st.sampled_from([(" ", ""), ("", " "), ("\t", ""), ("  ", ""), (" ", "\t")]),
    others,
)
def test_heads_equal_but_the_key_are_the_same_request(
    a: str, b: str, pad_a: tuple[str, str], pad_b: tuple[str, str], extra: list[str]
) -> None:
    one = build([("Sec-WebSocket-Key", f"{pad_a[0]}{a}=={pad_a[1]}")], extra)
    two = build([("Sec-WebSocket-Key", f"{pad_b[0]}{b}=={pad_b[1]}")], extra)
    span_one, span_two = _core.key_span(one), _core.key_span(two)
    if span_one is None or span_two is None:
        return
    if len(one) != len(two) or span_one[:2] != span_two[:2]:
        return  # another layout: the core does not see them as the same
    vs, ve, _ = span_one
    assert one[:vs] == two[:vs] and one[ve:] == two[ve:]
    try:
        first = http11.parse_request_head(one)
    except HttpError:
        with pytest.raises(HttpError):
            http11.parse_request_head(two)
        return
    second = http11.parse_request_head(two)
    assert first.headers.pop("sec-websocket-key").strip() == a + "=="
    assert second.headers.pop("sec-websocket-key").strip() == b + "=="
    assert first == second


def test_the_rfc_example_and_refusals() -> None:
    head = build([("Sec-WebSocket-Key", " " + KEY)], [])
    vs, ve, at = _core.key_span(head) or (0, 0, 0)
    assert head[at : at + 24] == KEY.encode() and head[vs:ve] == b" " + KEY.encode()
    assert _core.key_span(build([("Sec-WebSocket-Key", " " + KEY)] * 2, [])) is None
    assert _core.key_span(build([("Sec-WebSocket-Key", " " + KEY[:-1])], [])) is None
    assert _core.key_span(build([], [])) is None
    assert _core.key_span(head[:-2]) is None  # not a complete head
