"""Where a client put its credential, and the upgrade request with every trace of it removed.

Pure. A credential may come in five places (WSO2 API-M and Choreo Connect forms):

- ``Authorization: Bearer <token>`` (an OAuth2 access token), ``apikey: <key>`` (an API key);
- ``?access_token=<token>`` and ``?apikey=<key>`` on the upgrade URL (browsers cannot set
  headers on a WebSocket);
- ``Sec-WebSocket-Protocol: choreo-oauth2-key, <token>`` / ``choreo-api-key, <key>``: the entry
  right after the marker is the credential.

:func:`extract` finds them all (the enforcer decides which applies) and gives back the query
string and subprotocol offer without them, which is all the backend ever sees. Token text is a
secret: :func:`redact_query` is what a log line may show of a query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus

from router.http11 import Headers

OAUTH2 = "oauth2"
API_KEY = "api_key"
OAUTH2_MARKER = "choreo-oauth2-key"
API_KEY_MARKER = "choreo-api-key"
MARKERS = {OAUTH2_MARKER: OAUTH2, API_KEY_MARKER: API_KEY}
QUERY_PARAMETERS = {"access_token": OAUTH2, "apikey": API_KEY}
# Headers the enforcer is never sent in its ``headers`` map (they carry credentials or the
# subprotocol offer, which may hold one).
CREDENTIAL_HEADERS = frozenset({"authorization", "apikey", "sec-websocket-protocol"})
REDACTED = "REDACTED"


@dataclass(frozen=True, slots=True)
class Credential:
    kind: str  # OAUTH2 or API_KEY
    source: str  # "header", "query" or "subprotocol"
    token: str

    def __repr__(self) -> str:  # never show the token, even in a traceback
        return f"Credential(kind={self.kind!r}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class Extracted:
    """What :func:`extract` found on one upgrade request."""

    credentials: tuple[Credential, ...]
    query: str  # the query string without access_token / apikey parameters
    subprotocols: tuple[str, ...]  # the client's offer without markers and their tokens
    marker: str  # the first choreo-* marker the client offered, "" when none

    @property
    def offer(self) -> str:
        """The ``Sec-WebSocket-Protocol`` value to send the backend ("" for none)."""
        return ", ".join(self.subprotocols)

    def __repr__(self) -> str:
        return (
            f"Extracted({len(self.credentials)} credential(s), marker={self.marker!r}, "
            f"subprotocols={self.subprotocols!r})"
        )


def _query_parameter(piece: str) -> str:
    """The decoded name of one ``name=value`` piece of a query string."""
    name = piece.partition("=")[0]
    try:
        return unquote_plus(name, errors="strict")
    except UnicodeDecodeError:
        return name


def _split_query(query: str) -> tuple[list[Credential], str]:
    credentials: list[Credential] = []
    kept: list[str] = []
    for piece in query.split("&"):
        if not piece:
            continue
        kind = QUERY_PARAMETERS.get(_query_parameter(piece))
        if kind is None:
            kept.append(piece)
            continue
        token = unquote_plus(piece.partition("=")[2]).strip()
        if token:
            credentials.append(Credential(kind, "query", token))
    return credentials, "&".join(kept)


def _split_subprotocols(offer: str) -> tuple[list[Credential], list[str], str]:
    entries = [entry.strip() for entry in offer.split(",")]
    entries = [entry for entry in entries if entry]
    credentials: list[Credential] = []
    kept: list[str] = []
    marker = ""
    index = 0
    while index < len(entries):
        entry = entries[index]
        kind = MARKERS.get(entry.lower())
        if kind is None:
            kept.append(entry)
            index += 1
            continue
        marker = marker or entry.lower()
        if index + 1 < len(entries):
            credentials.append(Credential(kind, "subprotocol", entries[index + 1]))
        index += 2
    return credentials, kept, marker


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def extract(headers: Headers, query: str) -> Extracted:
    """Every credential of an upgrade request, in the order Authorization, apikey header,
    query parameters, subprotocol entries; with the query and subprotocol offer cleaned."""
    credentials: list[Credential] = []
    bearer = _bearer(headers.get("authorization", ""))
    if bearer:
        credentials.append(Credential(OAUTH2, "header", bearer))
    apikey = headers.get("apikey", "").strip()
    if apikey:
        credentials.append(Credential(API_KEY, "header", apikey))
    from_query, cleaned = _split_query(query)
    from_offer, offered, marker = _split_subprotocols(headers.get("sec-websocket-protocol", ""))
    credentials += from_query + from_offer
    return Extracted(tuple(credentials), cleaned, tuple(offered), marker)


def enforcer_headers(headers: Headers) -> dict[str, str]:
    """The request headers the enforcer may look at: none that may carry a credential."""
    return {name: value for name, value in headers.items() if name not in CREDENTIAL_HEADERS}


def selected_subprotocol(extracted: Extracted, backend_choice: str) -> str:
    """What the client is answered in ``Sec-WebSocket-Protocol``: the backend's choice; when
    the backend chose none and the client offered a choreo-* marker, the marker (a browser
    fails a handshake whose answer selects none of the protocols it offered)."""
    if backend_choice:
        return backend_choice
    return extracted.marker


def redact_query(query: str) -> str:
    """A query string as a log line may show it: credential values replaced."""
    pieces = []
    for piece in query.split("&"):
        if piece and _query_parameter(piece) in QUERY_PARAMETERS:
            piece = f"{piece.partition('=')[0]}={REDACTED}"
        pieces.append(piece)
    return "&".join(pieces)


def redact_target(target: str) -> str:
    """A request target (path?query) as a log line may show it."""
    path, sep, query = target.partition("?")
    return path + sep + redact_query(query) if sep else path
