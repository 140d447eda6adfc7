"""Credential extraction from an upgrade request (pure): every carrier, and what is left."""

from __future__ import annotations

import pytest

from router.credentials import (
    Credential,
    enforcer_headers,
    extract,
    redact_query,
    redact_target,
    selected_subprotocol,
)


def found(headers: dict[str, str], query: str = "") -> list[tuple[str, str, str]]:
    return [(c.kind, c.source, c.token) for c in extract(headers, query).credentials]


def test_every_carrier_in_order() -> None:
    headers = {
        "authorization": "Bearer a.b.c",
        "apikey": "k.e.y",
        "sec-websocket-protocol": "choreo-oauth2-key, s.u.b, choreo-api-key, s.k.y",
    }
    assert found(headers, "access_token=q.t.k&apikey=q.k.y") == [
        ("oauth2", "header", "a.b.c"),
        ("api_key", "header", "k.e.y"),
        ("oauth2", "query", "q.t.k"),
        ("api_key", "query", "q.k.y"),
        ("oauth2", "subprotocol", "s.u.b"),
        ("api_key", "subprotocol", "s.k.y"),
    ]


def test_nothing_offered() -> None:
    got = extract({"host": "x"}, "a=1")
    assert got.credentials == () and got.query == "a=1"
    assert got.subprotocols == () and got.marker == "" and got.offer == ""


@pytest.mark.parametrize(
    ("query", "kept", "tokens"),
    [
        ("access_token=t1", "", ["t1"]),
        ("a=1&access_token=t1&b=2", "a=1&b=2", ["t1"]),
        ("apikey=k1&apikey=k2", "", ["k1", "k2"]),
        ("%61ccess_token=t1&x", "x", ["t1"]),  # an encoded name is still the parameter
        ("access_token=&b=2", "b=2", []),  # empty value: removed, but no credential
        ("access_token", "", []),
        ("access_tokens=t1&x_apikey=2", "access_tokens=t1&x_apikey=2", []),
        ("access_token=a%2Eb%2Ec", "", ["a.b.c"]),
        ("&&a=1&", "a=1", []),
    ],
)
def test_query_parameters_are_taken_out(query: str, kept: str, tokens: list[str]) -> None:
    got = extract({}, query)
    assert got.query == kept
    assert [c.token for c in got.credentials] == tokens
    assert all(c.source == "query" for c in got.credentials)


@pytest.mark.parametrize(
    ("offer", "left", "marker", "tokens"),
    [
        ("choreo-oauth2-key, t1", (), "choreo-oauth2-key", [("oauth2", "t1")]),
        ("choreo-api-key,k1", (), "choreo-api-key", [("api_key", "k1")]),
        (
            "graphql-transport-ws, choreo-oauth2-key, t1, chat",
            ("graphql-transport-ws", "chat"),
            "choreo-oauth2-key",
            [("oauth2", "t1")],
        ),
        ("Choreo-OAuth2-Key, t1", (), "choreo-oauth2-key", [("oauth2", "t1")]),
        ("chat, choreo-api-key", ("chat",), "choreo-api-key", []),  # marker without a token
        ("chat, superchat", ("chat", "superchat"), "", []),
        (
            "choreo-api-key, k1, choreo-oauth2-key, t1",
            (),
            "choreo-api-key",
            [("api_key", "k1"), ("oauth2", "t1")],
        ),
    ],
)
def test_subprotocol_offer(
    offer: str, left: tuple[str, ...], marker: str, tokens: list[tuple[str, str]]
) -> None:
    got = extract({"sec-websocket-protocol": offer}, "")
    assert got.subprotocols == left
    assert got.offer == ", ".join(left)
    assert got.marker == marker
    assert [(c.kind, c.token) for c in got.credentials] == tokens


def test_authorization_must_be_bearer() -> None:
    assert found({"authorization": "Basic YTpi"}) == []
    assert found({"authorization": "bearer  t1 "}) == [("oauth2", "header", "t1")]
    assert found({"authorization": "Bearer "}) == []
    assert found({"apikey": "  "}) == []


def test_selected_subprotocol() -> None:
    marked = extract({"sec-websocket-protocol": "chat, choreo-oauth2-key, t1"}, "")
    assert selected_subprotocol(marked, "") == "choreo-oauth2-key"
    assert selected_subprotocol(marked, "chat") == "chat"
    plain = extract({"sec-websocket-protocol": "chat"}, "")
    assert selected_subprotocol(plain, "") == ""
    assert selected_subprotocol(plain, "chat") == "chat"


def test_enforcer_headers_hold_no_credential_carrier() -> None:
    headers = {
        "authorization": "Bearer t",
        "apikey": "k",
        "sec-websocket-protocol": "choreo-api-key, k",
        "origin": "https://a.example",
        "user-agent": "ua",
    }
    assert enforcer_headers(headers) == {"origin": "https://a.example", "user-agent": "ua"}


def test_redaction() -> None:
    assert redact_query("a=1&access_token=s3cr3t&apikey=k3y&%61pikey=k4") == (
        "a=1&access_token=REDACTED&apikey=REDACTED&%61pikey=REDACTED"
    )
    assert redact_target("/p?access_token=s3cr3t") == "/p?access_token=REDACTED"
    assert redact_target("/p") == "/p"


def test_reprs_never_show_a_token() -> None:
    credential = Credential("oauth2", "query", "s3cr3t")
    got = extract({"apikey": "s3cr3t"}, "access_token=s3cr3t")
    assert "s3cr3t" not in repr(credential) and "s3cr3t" not in repr(got)
