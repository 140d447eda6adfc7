"""The header parser's shortcuts (a memo of names, one scan of the head for CR/LF/NUL) give the
very answers of the line-by-line reference: the same headers, or the same error."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from router import http11
from router.http11 import HttpError

_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):(.*)\Z", re.DOTALL)


def _reference(lines: list[bytes]) -> dict[str, str]:
    """Each line matched as a whole and each value checked on its own."""
    if len(lines) > http11.MAX_HEADERS:
        raise HttpError(431, "too many")
    headers: dict[str, str] = {}
    for line in lines:
        found = _LINE.match(line)
        if found is None:
            raise HttpError(400, "Malformed header line.")
        name, value = found.groups()
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise HttpError(400, "Invalid character in a header value.")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _outcome(parse: object, *args: object) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except HttpError as exc:
        return (exc.status, exc.description)


_pieces = st.sampled_from(
    [
        b"Host",
        b"host",
        b"X-Y",
        b"Sec-WebSocket-Key",
        b":",
        b": ",
        b" ",
        b"\t",
        b"a",
        b"\r",
        b"\n",
        b"\x00",
        b"\xff",
        b"@",
        b"v=1",
        b"Upgrade",
        b"",
        b"\r\n",
    ]
)
_line = st.lists(_pieces, max_size=6).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, min_size=1, max_size=6))
def test_a_head_parses_as_the_reference_parses_its_lines(lines: list[bytes]) -> None:
    head = b"GET / HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    split = head.split(b"\r\n")
    while split and not split[-1]:
        split.pop()
    got = _outcome(http11.parse_request_head, head)
    want = _outcome(_reference, split[1:])
    if isinstance(got, http11.Request):
        assert got.headers == want
    elif got != (400, "Folded header lines are not allowed."):
        assert got == want


def test_a_bare_line_break_or_nul_in_a_value_is_still_refused() -> None:
    for bad in (b"a\rb", b"a\nb", b"a\x00b"):
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + bad + b"\r\n\r\n"
        got = _outcome(http11.parse_request_head, head)
        assert got == (400, "Invalid character in a header value.")
    response = b"HTTP/1.1 101 OK\r\nUpgrade: a\x00b\r\n\r\n"
    try:
        http11.parse_response_head(response)
    except ValueError as exc:
        assert str(exc) == "Invalid character in a header value."
    else:
        raise AssertionError("a NUL in a response header passed")
