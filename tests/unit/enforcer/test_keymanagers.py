"""Key managers from xDS as issuers, merging with static issuers, and JWKS refresh on unknown kid
(against a real local HTTP server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import any_pb2

from enforcer.feeds import Feeds
from enforcer.issuers import Issuer, load_issuers_file
from enforcer.jwks import JwksRefresher
from enforcer.keymanagers import IssuerBook, issuer_from_key_manager
from enforcer.policies import PolicyStore
from enforcer.service import HandshakeService
from enforcer.subscriptions import SubscriptionStore
from enforcer.testkey import TestKeySigner, public_jwk
from enforcer.tokens import validate
from enforcer.watch import ConnectionWatch
from tests.procs import eventually
from wsgate_common.resources import (
    API_POLICY_TYPE_URL,
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
)
from wsgate_proto import config_pb2, enforcer_pb2
from wsgate_proto import subscription_pb2 as sp

from .conftest import NOW, claims

CP_ISS = "https://localhost:9443/oauth2/token"


def jwks_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    return {"keys": [{**public_jwk(key.public_key()), "kid": kid, "alg": "RS256", "use": "sig"}]}


def cp_token(key: rsa.RSAPrivateKey, kid: str, **overrides: object) -> str:
    payload = claims(
        **{"iss": CP_ISS, "aud": None, "azp": "ck-1", "keytype": "PRODUCTION", **overrides}
    )
    return jwt.encode(payload, key, "RS256", headers={"kid": kid})


def test_key_manager_with_inline_jwks_validates_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    km = sp.KeyManager(
        name="cp",
        issuer=CP_ISS,
        algorithms=["RS256"],
        jwks_json=json.dumps(jwks_of(rsa_key, "k1")),
        consumer_key_claim="azp",
    )
    book = IssuerBook([])
    book.set_key_managers([km])
    verified = validate(cp_token(rsa_key, "k1"), book.registry, NOW)
    assert verified.check_subscriptions
    assert verified.consumer_key == "ck-1"
    assert verified.issuer_name == "cp"


def test_consumer_key_claim_is_configurable(rsa_key: rsa.RSAPrivateKey) -> None:
    km = sp.KeyManager(
        name="cp",
        issuer=CP_ISS,
        algorithms=["RS256"],
        jwks_json=json.dumps(jwks_of(rsa_key, "k1")),
        consumer_key_claim="client_key",
    )
    book = IssuerBook([])
    book.set_key_managers([km])
    token = cp_token(rsa_key, "k1", client_key="other")
    assert validate(token, book.registry, NOW).consumer_key == "other"


@pytest.mark.parametrize(
    ("km", "message"),
    [
        (
            sp.KeyManager(name="x", issuer="i", algorithms=["HS256"], jwks_url="https://i/j"),
            "HS256",
        ),
        (sp.KeyManager(name="x", issuer="i", algorithms=["RS256"]), "no verification key"),
        (sp.KeyManager(name="x", issuer="i", algorithms=["RS256"], jwks_json="[1"), "not JSON"),
        (
            sp.KeyManager(name="x", issuer="i", algorithms=["RS256"], certificate_pem="junk"),
            "certificate_pem",
        ),
        (sp.KeyManager(name="x", issuer="i", algorithms=["RS256"], jwks_url="ftp://x"), "http"),
        (sp.KeyManager(name="x", algorithms=["RS256"], jwks_url="https://i/j"), "issuer"),
    ],
    ids=["hs256", "no-key", "bad-json", "bad-pem", "bad-url", "no-issuer"],
)
def test_bad_key_manager(km: sp.KeyManager, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        issuer_from_key_manager(km)


def test_book_merges_and_refuses_to_override_the_testkey_issuer(signer: TestKeySigner) -> None:
    file_issuer = Issuer(name="file", issuer=CP_ISS, algorithms=("RS256",), jwks_url="https://f")
    book = IssuerBook([signer.as_issuer(), file_issuer])
    km = sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url="https://cp/j")
    book.set_key_managers([km])
    cp = book.registry.get(CP_ISS)
    assert cp is not None and cp.name == "cp"  # the key manager replaces the file entry
    before = book.registry
    evil = sp.KeyManager(
        name="evil", issuer=signer.issuer, algorithms=["RS256"], jwks_url="https://e"
    )
    with pytest.raises(ValueError, match="built-in"):
        book.set_key_managers([evil])
    assert book.registry is before
    book.set_key_managers([])
    file_again = book.registry.get(CP_ISS)
    assert file_again is not None and file_again.name == "file"


@dataclass
class JwksServer:
    """A tiny real HTTP server answering every GET with ``document`` after ``delay`` seconds."""

    document: dict[str, object]
    delay: float = 0.0
    hits: int = 0
    port: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hits += 1
        await asyncio.sleep(self.delay)
        body = json.dumps(self.document).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/jwks"


@pytest.fixture
async def jwks_server(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[JwksServer]:
    srv = JwksServer(jwks_of(rsa_key, "k2"))
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = srv.server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        srv.server.close()
        await srv.server.wait_closed()


def installed(book: IssuerBook, name: str, kid: str) -> bool:
    issuer = book.by_name(name)
    return issuer is not None and issuer.key_for(kid) is not None


def _packed(*items: object) -> list[any_pb2.Any]:
    out = []
    for item in items:
        resource = any_pb2.Any()
        resource.Pack(item)
        out.append(resource)
    return out


def service_for(book: IssuerBook, refresher: JwksRefresher) -> HandshakeService:
    policies = PolicyStore()
    topic = config_pb2.TopicPolicy(path="/t", secured=True)
    policies.apply(
        "1",
        _packed(
            config_pb2.ApiPolicy(
                api_id="api", has_production_endpoint=True, topics=[topic], source="control-plane"
            )
        ),
    )
    store = SubscriptionStore()
    store.apply(APPLICATION_TYPE_URL, "1", _packed(sp.Application(id="app", owner="bob")))
    store.apply(
        KEY_MAPPING_TYPE_URL,
        "1",
        _packed(sp.KeyMapping(consumer_key="ck-1", application_id="app", key_type="PRODUCTION")),
    )
    store.apply(
        SUBSCRIPTION_TYPE_URL,
        "1",
        _packed(sp.Subscription(id="s", api_id="api", application_id="app")),
    )
    assert API_POLICY_TYPE_URL  # the policy above is what the router would look up
    return HandshakeService(policies, book, store, clock=lambda: NOW, refresher=refresher)


def request(token: str) -> enforcer_pb2.HandshakeRequest:
    return enforcer_pb2.HandshakeRequest(api_id="api", topic="/t", authorization=f"Bearer {token}")


async def test_unknown_kid_fetches_the_jwks_once_and_then_allows(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    book = IssuerBook([])
    book.set_key_managers(
        [sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url=jwks_server.url)]
    )
    refresher = JwksRefresher(book, verify=False)
    service = service_for(book, refresher)
    response = await service.check_async(request(cp_token(rsa_key, "k2")))
    assert response.allowed, response.description
    assert response.subscriber == "bob"
    assert jwks_server.hits == 1
    # Known now: no more fetching.
    assert (await service.check_async(request(cp_token(rsa_key, "k2")))).allowed
    # A made-up kid right after: refused without a new fetch (rate limit).
    refused = await service.check_async(request(cp_token(rsa_key, "made-up")))
    assert (refused.http_status, refused.error_code) == (401, 900901)
    assert "Unknown signing key" in refused.description
    assert jwks_server.hits == 1


async def test_a_slow_jwks_does_not_hold_a_check_past_the_wait(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    # The server answers 3 s late; the check waits 0.2 s. Returning well before the answer
    # (under 2 s, with room for a loaded machine) shows the wait is bounded.
    jwks_server.delay = 3.0
    book = IssuerBook([])
    book.set_key_managers(
        [sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url=jwks_server.url)]
    )
    refresher = JwksRefresher(book, verify=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await refresher.refresh("cp", wait=0.2)
    waited = loop.time() - started
    print(f"\nrefresh with wait=0.2 against a 3 s JWKS returned after {waited * 1000:.0f} ms")
    assert waited < 2.0
    assert not installed(book, "cp", "k2")
    # The fetch goes on and installs the keys for later handshakes.
    await eventually(lambda: installed(book, "cp", "k2"), what="the late JWKS keys")
    assert jwks_server.hits == 1


async def test_refresh_is_rate_limited_per_issuer(jwks_server: JwksServer) -> None:
    book = IssuerBook([])
    book.set_key_managers(
        [sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url=jwks_server.url)]
    )
    now = [0.0]
    refresher = JwksRefresher(book, verify=False, min_interval=10, clock=lambda: now[0])
    assert await refresher.refresh("cp")
    now[0] = 5
    assert not await refresher.refresh("cp")
    now[0] = 11
    assert await refresher.refresh("cp")
    assert jwks_server.hits == 2
    assert not await refresher.refresh("nobody")


async def test_unreachable_jwks_is_a_denial_not_a_crash(rsa_key: rsa.RSAPrivateKey) -> None:
    book = IssuerBook([])
    book.set_key_managers(
        [
            sp.KeyManager(
                name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url="http://127.0.0.1:9/j"
            )
        ]
    )
    service = service_for(book, JwksRefresher(book, verify=False))
    response = await service.check_async(request(cp_token(rsa_key, "k2")))
    assert (response.http_status, response.error_code) == (401, 900901)


def test_issuer_book_keeps_fetched_keys_across_key_manager_updates(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    km = sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url="https://cp/j")
    book = IssuerBook([])
    book.set_key_managers([km])
    book.set_fetched_keys("cp", MappingProxyType({"k9": rsa_key.public_key()}))
    book.set_key_managers([km])
    issuer = book.by_name("cp")
    assert issuer is not None and issuer.key_for("k9") is not None
    book.set_key_managers([])
    assert book.by_name("cp") is None and book.fetched == {}


def test_client_id_stands_in_for_azp(rsa_key: rsa.RSAPrivateKey) -> None:
    km = sp.KeyManager(
        name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_json=json.dumps(jwks_of(rsa_key, "k1"))
    )
    book = IssuerBook([])
    book.set_key_managers([km])
    payload = claims(iss=CP_ISS, aud=None, client_id="ck-rfc9068")
    token = jwt.encode(payload, rsa_key, "RS256", headers={"kid": "k1"})
    assert validate(token, book.registry, NOW).consumer_key == "ck-rfc9068"


async def test_key_manager_feed_rebuilds_issuers_and_nacks_bad_ones(
    signer: TestKeySigner, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    book = IssuerBook([signer.as_issuer()])
    refresher = JwksRefresher(book, verify=False)
    feeds = Feeds(PolicyStore(), SubscriptionStore(), book, ConnectionWatch(), refresher)
    handle = feeds.handlers()[KEY_MANAGER_TYPE_URL]
    # A key manager known only by its JWKS URL: its keys are fetched right away.
    handle(
        "1",
        _packed(
            sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url=jwks_server.url)
        ),
    )
    await eventually(lambda: installed(book, "cp", "k2"), what="the fetched JWKS keys")
    assert jwks_server.hits == 1
    assert validate(cp_token(rsa_key, "k2"), book.registry, NOW).issuer_name == "cp"
    # A bad one is refused (NACK) and changes nothing.
    before = (book.registry, feeds.subscriptions.current)
    with pytest.raises(ValueError):
        handle(
            "2",
            _packed(
                sp.KeyManager(name="x", issuer="i", algorithms=["HS256"], jwks_url="https://i")
            ),
        )
    assert (book.registry, feeds.subscriptions.current) == before
    assert list(feeds.subscriptions.current.key_managers) == ["cp"]


async def test_file_issuer_with_jwks_url_fetches_on_unknown_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    """An issuers-file entry with only a jwks_url behaves like a key manager's: a token naming
    a kid it does not hold makes the JWKS be fetched (once), then it is verified."""
    (tmp_path / "issuers.yaml").write_text(
        f"- name: idp\n  issuer: {CP_ISS}\n  jwks_url: {jwks_server.url}\n"
    )
    book = IssuerBook(load_issuers_file(tmp_path / "issuers.yaml"))
    refresher = JwksRefresher(book, verify=False)
    service = service_for(book, refresher)
    assert not installed(book, "idp", "k2")
    response = await service.check_async(request(cp_token(rsa_key, "k2")))
    assert response.allowed, response.description
    assert jwks_server.hits == 1 and installed(book, "idp", "k2")
    assert (await service.check_async(request(cp_token(rsa_key, "k2")))).allowed
    refused = await service.check_async(request(cp_token(rsa_key, "made-up")))
    assert "Unknown signing key" in refused.description
    assert jwks_server.hits == 1  # bounded: no second fetch within the interval


@pytest.mark.parametrize("source", ["file", "key manager"])
async def test_audience_is_checked_per_issuer_when_configured(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer, source: str
) -> None:
    if source == "file":
        (tmp_path / "issuers.yaml").write_text(
            f"- name: idp\n  issuer: {CP_ISS}\n  jwks_url: {jwks_server.url}\n"
            "  audience: [wsgate-gw, other-gw]\n"
        )
        book = IssuerBook(load_issuers_file(tmp_path / "issuers.yaml"))
    else:
        book = IssuerBook([])
        km = sp.KeyManager(
            name="idp",
            issuer=CP_ISS,
            algorithms=["RS256"],
            jwks_url=jwks_server.url,
            audience="wsgate-gw",
        )
        book.set_key_managers([km])
    service = service_for(book, JwksRefresher(book, verify=False))
    allowed = await service.check_async(request(cp_token(rsa_key, "k2", aud="wsgate-gw")))
    assert allowed.allowed, allowed.description
    listed = await service.check_async(request(cp_token(rsa_key, "k2", aud=["x", "wsgate-gw"])))
    assert listed.allowed, listed.description
    for aud in ("someone-else", None):
        refused = await service.check_async(request(cp_token(rsa_key, "k2", aud=aud)))
        assert (refused.http_status, refused.error_code) == (401, 900901), aud
        assert "audience" in refused.description.lower() or "aud" in refused.description


async def test_without_audience_any_aud_is_accepted(
    rsa_key: rsa.RSAPrivateKey, jwks_server: JwksServer
) -> None:
    book = IssuerBook([])
    book.set_key_managers(
        [sp.KeyManager(name="cp", issuer=CP_ISS, algorithms=["RS256"], jwks_url=jwks_server.url)]
    )
    service = service_for(book, JwksRefresher(book, verify=False))
    for aud in ("anything", None):
        assert (await service.check_async(request(cp_token(rsa_key, "k2", aud=aud)))).allowed
