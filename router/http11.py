"""HTTP/1.1 heads as the router needs them: parse, validate a WebSocket upgrade, build replies.

Pure functions and one small incremental buffer; no sockets. Errors are :class:`HttpError`
carrying the status to answer with, so the edge code only has to render them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

Headers = dict[str, str]  # lower-cased name -> value (repeated headers joined with ", ")


class HttpError(Exception):
    """A request the router answers with ``status`` instead of serving it."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        code: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = status if code is None else code
        self.description = description
        self.headers = tuple(headers)

    @property
    def message(self) -> str:
        return _reason(self.status)


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: Headers


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers = field(default_factory=dict)


class HeadReader:
    """Accumulates bytes until a complete head (``\\r\\n\\r\\n``) arrived; keeps what follows."""

    __slots__ = ("_buf", "_limit")

    def __init__(self, limit: int = MAX_HEAD) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """Add ``data``; return ``(head, rest)`` once the head is complete, else None.

        Raises:
            HttpError: 431 when the head grows past the limit without ending.
        """
        start = max(0, len(self._buf) - 3)
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buf) > self._limit:
                raise HttpError(431, "The request head is larger than 16 KiB.")
            return None
        if end + 4 > self._limit:
            raise HttpError(431, "The request head is larger than 16 KiB.")
        head, rest = bytes(self._buf[: end + 4]), bytes(self._buf[end + 4 :])
        self._buf = bytearray()
        return head, rest


# A request target: visible ASCII only.
_TARGET = re.compile(rb"/[\x21-\x7e]*\Z")


# A header name: a token (the colon after it is found by partition).
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_NAMES: dict[bytes, str] = {}  # header names seen, lower-cased (a bounded memo)
_MAX_NAMES = 512


def _clean(head: bytes) -> bool:
    """Whether no line of ``head`` (split at CRLF) holds a CR, an LF or a NUL: then no header
    value can, and :func:`_parse_headers` need not look for them value by value."""
    crlf = head.count(b"\r\n")
    return head.count(b"\r") == crlf and head.count(b"\n") == crlf and b"\x00" not in head


def _parse_headers(lines: list[bytes], clean: bool = False) -> Headers:
    """The header lines by lower-cased name (``clean``: see :func:`_clean`)."""
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, f"More than {MAX_HEADERS} request headers.")
    headers: Headers = {}
    names = _NAMES
    for line in lines:
        name, colon, value = line.partition(b":")
        key = names.get(name)
        if key is None:
            if not colon or _HEADER_NAME.match(name) is None:
                raise HttpError(400, "Malformed header line.")
            key = name.decode("ascii").lower()
            if len(names) < _MAX_NAMES:
                names[name] = key
        elif not colon:
            raise HttpError(400, "Malformed header line.")
        value = value.strip(b" \t")
        if not clean and (b"\r" in value or b"\n" in value or b"\x00" in value):
            raise HttpError(400, "Invalid character in a header value.")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def parse_request_head(head: bytes) -> Request:
    """Parse a request head (request line + headers, ending with an empty line).

    Raises:
        HttpError: 400 for anything malformed, 431 for too many headers, 505 for HTTP/2+.
    """
    lines = head.split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HttpError(400, "Empty request.")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "Malformed request line.")
    method_b, target_b, version = parts
    if not method_b or not _TOKEN_CHARS.issuperset(method_b):
        raise HttpError(400, "Malformed request method.")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise HttpError(505, "Only HTTP/1.1 is supported.")
        raise HttpError(400, "Malformed HTTP version.")
    if _TARGET.match(target_b) is None:
        raise HttpError(400, "The request target must be an absolute path.")
    target = target_b.decode("ascii")
    path, _, query = target.partition("?")
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        raise HttpError(400, "Folded header lines are not allowed.")
    headers = _parse_headers(lines[1:], _clean(head))
    return Request(method_b.decode("ascii"), target, path, query, headers)


def parse_response_head(head: bytes) -> Response:
    """Parse a response head such as the backend's ``101 Switching Protocols``.

    Raises:
        ValueError: malformed status line or headers.
    """
    lines = head.split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError("empty response head")
    version, _, rest = lines[0].partition(b" ")
    status_b, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(status_b) != 3 or not status_b.isdigit():
        raise ValueError(f"malformed status line {lines[0][:80]!r}")
    try:
        headers = _parse_headers(lines[1:], _clean(head))
    except HttpError as exc:
        raise ValueError(exc.description) from None
    return Response(int(status_b), reason.decode("latin-1"), headers)


def header_tokens(value: str) -> list[str]:
    """Comma-separated tokens of a header value, lower-cased (``keep-alive, Upgrade``)."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def is_upgrade(request: Request) -> bool:
    """Whether the client asks for a WebSocket (validity is checked by :func:`validate_upgrade`)."""
    return "websocket" in header_tokens(request.headers.get("upgrade", ""))


def validate_upgrade(request: Request) -> str:
    """Check an RFC 6455 opening handshake; return the client's ``Sec-WebSocket-Key``.

    Raises:
        HttpError: 400 for a malformed handshake, 426 (with ``Sec-WebSocket-Version: 13``) for
            an unsupported version.
    """
    headers = request.headers
    if request.method != "GET":
        raise HttpError(400, "A WebSocket handshake must use GET.")
    if not is_upgrade(request):
        raise HttpError(400, "Missing 'Upgrade: websocket' header.")
    if "upgrade" not in header_tokens(headers.get("connection", "")):
        raise HttpError(400, "Missing 'Connection: Upgrade' header.")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HttpError(
            426,
            "Only WebSocket version 13 is supported.",
            headers=[("Sec-WebSocket-Version", "13")],
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HttpError(400, "Sec-WebSocket-Key must be 16 random bytes in base64.")
    return key


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def check_backend_response(response: Response, key: str) -> None:
    """Verify the backend accepted our upgrade with the accept key derived from ``key``.

    Raises:
        ValueError: not a 101, not an upgrade to websocket, or a wrong accept key.
    """
    if response.status != 101:
        raise ValueError(f"backend answered {response.status} {response.reason}".strip())
    if "websocket" not in header_tokens(response.headers.get("upgrade", "")):
        raise ValueError("backend 101 lacks 'Upgrade: websocket'")
    if "upgrade" not in header_tokens(response.headers.get("connection", "")):
        raise ValueError("backend 101 lacks 'Connection: Upgrade'")
    if response.headers.get("sec-websocket-accept", "") != accept_key(key):
        raise ValueError("backend sent a wrong Sec-WebSocket-Accept")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def extension_names(value: str) -> list[str]:
    """The extension names in a ``Sec-WebSocket-Extensions`` value, lower-cased."""
    names = (part.split(";", 1)[0].strip().lower() for part in value.split(","))
    return [name for name in names if name]


def without_extension(offer: str, name: str) -> str:
    """``Sec-WebSocket-Extensions`` value ``offer`` without the offers of extension ``name``.

    ``"permessage-deflate; client_max_window_bits, x-foo"`` without ``permessage-deflate`` is
    ``"x-foo"``; the names compare case-insensitively (RFC 6455 section 9.1).
    """
    kept = [
        part.strip()
        for part in offer.split(",")
        if part.strip() and part.split(";", 1)[0].strip().lower() != name.lower()
    ]
    return ", ".join(kept)


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


def switching_protocols(accept: str, protocol: str = "", extensions: str = "") -> bytes:
    """The 101 answer to the client, echoing what the backend chose (its fixed part built
    once)."""
    head = _SWITCHING + b"Sec-WebSocket-Accept: " + accept.encode("latin-1") + b"\r\n"
    if protocol:
        head += b"Sec-WebSocket-Protocol: " + protocol.encode("latin-1") + b"\r\n"
    if extensions:
        head += b"Sec-WebSocket-Extensions: " + extensions.encode("latin-1") + b"\r\n"
    return head + b"\r\n"


def response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A complete response that ends the connection (the router never keeps plain HTTP alive)."""
    all_headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *headers,
    ]
    return _head(status, all_headers) + body


def error_response(
    status: int,
    code: int,
    message: str,
    description: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A JSON error ``{code, message, description}`` with ``Connection: close``."""
    body = json.dumps({"code": code, "message": message, "description": description}).encode()
    return response(status, body, headers=headers)


def http_error_response(error: HttpError) -> bytes:
    return error_response(error.status, error.code, error.message, error.description, error.headers)
