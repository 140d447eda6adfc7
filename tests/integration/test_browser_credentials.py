"""Every way a client may present a credential, through REAL adapter, enforcer and router
processes, to a backend that reports the handshake request it received.

APIs are pushed to the adapter over gRPC (as the control plane does) with WSO2's
securityScheme and corsConfiguration; subscription data carries two key managers (OAuth2 access
tokens, and API keys with ``token_kind="api_key"``), each with a JWKS of a key generated here.
Clients are the python ``websockets`` client and wscat. At the end every log line and analytics
event of the run is searched for the token texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.server import Server, ServerConnection, serve

from enforcer.testkey import public_jwk
from tests.integration.adapter_enforcer import AdapterEnforcer, adapter_and_enforcer
from tests.integration.conftest import run_wscat
from tests.procs import PROMPT, free_port, http_ok, running, wait_for
from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc
from wsgate_proto import subscription_pb2 as sp

pytestmark = pytest.mark.integration

OAUTH_ISS = "https://localhost:9443/oauth2/token"
KEY_ISS = "https://localhost:9443/api-keys"
BOTH, KEYS_ONLY = "browser-both", "browser-keys-only"
APP_ORIGIN = "https://app.example.com"


@dataclass
class Backend:
    """A WebSocket backend that echoes, and answers ``report`` with the request it received."""

    server: Server
    port: int
    accepted: list[dict[str, Any]] = field(default_factory=list)


def _handler(backend: Backend, ws: ServerConnection) -> None:
    request = ws.request
    assert request is not None
    seen = {"path": request.path, "headers": [[k, v] for k, v in request.headers.raw_items()]}
    backend.accepted.append(seen)
    with contextlib.suppress(ConnectionClosed):
        for message in ws:
            ws.send(json.dumps(seen) if message == "report" else message)


def _select(conn: ServerConnection, offered: Any) -> Any:
    return "graphql-transport-ws" if "graphql-transport-ws" in offered else None


@contextlib.contextmanager
def reporting_backend() -> Iterator[Backend]:
    holder: list[Backend] = []
    server = serve(lambda ws: _handler(holder[0], ws), "127.0.0.1", 0, select_subprotocol=_select)
    backend = Backend(server, int(server.socket.getsockname()[1]))
    holder.append(backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        thread.join(5)


@dataclass
class Stack:
    pair: AdapterEnforcer
    backend: Backend
    router: int
    data_dir: Path
    oauth_key: rsa.RSAPrivateKey
    api_key_key: rsa.RSAPrivateKey
    analytics: Path
    tokens: list[str] = field(default_factory=list)  # every token handed out, for the log grep

    def url(self, api: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.router}/{api}/1.0.0/chat" + (f"?{query}" if query else "")

    def put(self, revoked: tuple[str, ...] = ()) -> None:
        with self.pair.tls.channel(self.pair.deploy_address) as channel:
            deploy_pb2_grpc.DeploymentServiceStub(channel).PutSubscriptionData(
                subscription_data(self.oauth_key, self.api_key_key, revoked), timeout=10
            )

    def oauth_token(self, jti: str = "oauth-1") -> str:
        now = int(time.time())
        claims = {
            "iss": OAUTH_ISS,
            "sub": "bob",
            "azp": "ck-prod",
            "keytype": "PRODUCTION",
            "jti": jti,
            "iat": now,
            "exp": now + 600,
        }
        token = jwt.encode(claims, self.oauth_key, "RS256", headers={"kid": "oauth"})
        self.tokens.append(token)
        return token

    def api_key(self, jti: str = "key-1", ips: str = "", referers: str = "") -> str:
        claims = {
            "iss": KEY_ISS,
            "sub": "bob",
            "jti": jti,
            "iat": int(time.time()),
            "keytype": "PRODUCTION",
            "application": {"uuid": "app-1", "name": "App", "tier": "Unlimited", "owner": "bob"},
            "permittedIP": ips,
            "permittedReferer": referers,
            "tokenType": "apiKey",
        }
        token = jwt.encode(claims, self.api_key_key, "RS256", headers={"kid": "keys"})
        self.tokens.append(token)
        return token


def api(api_id: str, schemes: list[str], backend: int, origins: list[str] | None) -> Any:
    url = f"ws://127.0.0.1:{backend}/chat"
    definition = definition_pb2.ApiDefinition(
        id=api_id,
        name=api_id,
        version="1.0.0",
        context=f"/{api_id}",
        api_type="WS",
        provider="admin",
        lifecycle_status="PUBLISHED",
        production_endpoint=definition_pb2.Endpoint(url=url),
        operations=[definition_pb2.Operation(target="/chat", verb="SUBSCRIBE")],
        api_throttling_policy="Unlimited",
        source="control-plane",
        security_scheme=schemes,
    )
    if origins is not None:
        definition.cors_configuration.cors_configuration_enabled = True
        definition.cors_configuration.access_control_allow_origins.extend(origins)
    return definition


def jwks(key: rsa.RSAPrivateKey, kid: str) -> str:
    return json.dumps({"keys": [{**public_jwk(key.public_key()), "kid": kid, "alg": "RS256"}]})


def subscription_data(
    oauth_key: rsa.RSAPrivateKey, api_key_key: rsa.RSAPrivateKey, revoked: tuple[str, ...]
) -> sp.SubscriptionData:
    return sp.SubscriptionData(
        applications=[sp.Application(id="app-1", name="App", owner="bob", tier="Unlimited")],
        subscriptions=[
            sp.Subscription(id=f"sub-{a}", api_id=a, application_id="app-1", tier="Unlimited")
            for a in (BOTH, KEYS_ONLY)
        ],
        key_mappings=[
            sp.KeyMapping(consumer_key="ck-prod", application_id="app-1", key_type="PRODUCTION")
        ],
        key_managers=[
            sp.KeyManager(
                name="Resident Key Manager",
                issuer=OAUTH_ISS,
                algorithms=["RS256"],
                jwks_json=jwks(oauth_key, "oauth"),
            ),
            sp.KeyManager(
                name="API keys",
                issuer=KEY_ISS,
                algorithms=["RS256"],
                jwks_json=jwks(api_key_key, "keys"),
                token_kind="api_key",
            ),
        ],
        revoked_tokens=[sp.RevokedToken(jti=j, expires_at=int(time.time()) + 600) for j in revoked],
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("browser-credentials")
    with (
        reporting_backend() as backend,
        adapter_and_enforcer(data_dir) as pair,
    ):
        port, xds = free_port(), pair.xds_address
        analytics = data_dir / "analytics.jsonl"
        env = {
            "WSGATE_DATA_DIR": str(data_dir),
            "WSGATE_LABEL": "Default",
            "WSGATE_ROUTER_HOST": "127.0.0.1",
            "WSGATE_ROUTER_PORT": str(port),
            "WSGATE_ROUTER_TLS_PORT": "0",
            "WSGATE_XDS_ADDRESS": xds,
            "WSGATE_ENFORCER_ADDRESS": pair.enforcer_address,
            "WSGATE_ENFORCER_HTTP_URL": pair.enforcer_http,
            "WSGATE_ROUTER_ANALYTICS_FILE": str(analytics),
            "WSGATE_ROUTER_ANALYTICS_INTERVAL": "0.2",
            "WSGATE_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
        }
        with pair.tls.channel(pair.deploy_address) as channel:
            stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
            for definition in (
                api(
                    BOTH,
                    ["oauth2", "api_key"],
                    backend.port,
                    [APP_ORIGIN, "http://localhost:8000", "http://127.0.0.1:*"],
                ),
                api(KEYS_ONLY, ["api_key"], backend.port, None),
            ):
                stub.Deploy(deploy_pb2.DeployRequest(api=definition), timeout=10)
        with running(
            "router",
            ["router"],
            env,
            data_dir,
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/ready"),
        ):
            stack = Stack(
                pair,
                backend,
                port,
                data_dir,
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                analytics,
            )
            stack.put()
            probe = stack.oauth_token("probe")
            wait_for(
                lambda: (
                    asyncio.run(attempt(stack.url(BOTH), {"Authorization": f"Bearer {probe}"}))[0]
                    == 101
                ),
                20,
                "the APIs and subscription data in the enforcer",
            )
            yield stack


async def attempt(
    url: str,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
    origin: str | None = None,
) -> tuple[int, Any, str | None]:
    """(status, the backend's report or the error body, the subprotocol the client got)."""
    try:
        async with connect(
            url,
            additional_headers=headers or {},
            subprotocols=subprotocols,  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
            open_timeout=10,
        ) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello"
            await ws.send("report")
            report = json.loads(await asyncio.wait_for(ws.recv(), 5))
            return 101, report, ws.subprotocol
    except InvalidStatus as exc:
        body = bytes(exc.response.body or b"")
        return exc.response.status_code, json.loads(body) if body else None, None


def assert_clean(report: dict[str, Any], *tokens: str) -> None:
    """The backend saw no credential carrier and no token text."""
    names = {name.lower() for name, _ in report["headers"]}
    assert not {"authorization", "apikey"} & names, report
    assert "access_token" not in report["path"] and "apikey" not in report["path"], report
    for name, value in report["headers"]:
        if name.lower() == "sec-websocket-protocol":
            assert "choreo-" not in value, report
    text = json.dumps(report)
    for token in tokens:
        assert token not in text


# ---- every carrier, python client ------------------------------------------------------------


def test_python_client_every_form_echoes_and_the_backend_sees_none(stack: Stack) -> None:
    token, key = stack.oauth_token(), stack.api_key(jti="key-forms")
    forms: list[tuple[str, dict[str, str], list[str] | None, str | None]] = [
        (stack.url(BOTH), {"Authorization": f"Bearer {token}"}, None, None),
        (stack.url(BOTH, f"access_token={token}&room=1"), {}, None, None),
        (stack.url(BOTH), {}, ["choreo-oauth2-key", token], "choreo-oauth2-key"),
        (stack.url(BOTH), {"apikey": key}, None, None),
        (stack.url(BOTH, f"room=1&apikey={key}"), {}, None, None),
        (stack.url(KEYS_ONLY), {}, ["choreo-api-key", key], "choreo-api-key"),
    ]
    for url, headers, offer, selected in forms:
        status, report, subprotocol = asyncio.run(attempt(url, headers, offer))
        assert status == 101, (url, headers, offer, report)
        assert subprotocol == selected
        assert_clean(report, token, key)
    query_report = asyncio.run(attempt(stack.url(BOTH, f"access_token={token}&room=1")))[1]
    assert query_report["path"] == "/chat?room=1"  # other parameters still reach the backend


def test_other_subprotocols_still_reach_the_backend_which_chooses(stack: Stack) -> None:
    token = stack.oauth_token()
    offer = ["graphql-transport-ws", "choreo-oauth2-key", token]
    status, report, subprotocol = asyncio.run(attempt(stack.url(BOTH), subprotocols=offer))
    assert status == 101 and subprotocol == "graphql-transport-ws"
    offered = [v for k, v in report["headers"] if k.lower() == "sec-websocket-protocol"]
    assert offered == ["graphql-transport-ws"]
    assert_clean(report, token)


# ---- wscat -----------------------------------------------------------------------------------


def test_wscat_header_query_and_subprotocol(stack: Stack) -> None:
    token, key = stack.oauth_token(), stack.api_key(jti="key-wscat")
    runs = [
        ["-c", stack.url(BOTH), "-H", f"Authorization:Bearer {token}"],
        ["-c", stack.url(BOTH, f"access_token={token}")],
        ["-c", stack.url(BOTH), "-s", "choreo-oauth2-key", "-s", token],
        ["-c", stack.url(KEYS_ONLY), "-H", f"apikey:{key}"],
        ["-c", stack.url(KEYS_ONLY, f"apikey={key}")],
        ["-c", stack.url(KEYS_ONLY), "-s", "choreo-api-key", "-s", key],
    ]
    for args in runs:
        result = run_wscat([*args, "-x", "hello", "-x", "report", "-w", "1"])
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        lines = [line.lstrip("< ").strip() for line in result.stdout.splitlines()]
        assert "hello" in lines, (args, result.stdout)
        report = json.loads(next(line for line in lines if line.startswith("{")))
        assert_clean(report, token, key)


# ---- refusals --------------------------------------------------------------------------------


def test_disagreeing_credentials_are_401(stack: Stack) -> None:
    one, other = stack.oauth_token("a"), stack.oauth_token("b")
    status, body, _ = asyncio.run(
        attempt(stack.url(BOTH, f"access_token={other}"), {"Authorization": f"Bearer {one}"})
    )
    assert status == 401 and body["code"] == 900901, body
    assert "disagree" in body["description"]
    same, _, _ = asyncio.run(
        attempt(stack.url(BOTH, f"access_token={one}"), {"Authorization": f"Bearer {one}"})
    )
    assert same == 101


def test_api_key_only_api_refuses_an_oauth2_token_and_missing_lists_forms(stack: Stack) -> None:
    token = stack.oauth_token()
    status, body, _ = asyncio.run(attempt(stack.url(KEYS_ONLY, f"access_token={token}")))
    assert status == 401 and body["code"] == 900901, body
    assert "does not accept an OAuth2 access token" in body["description"]
    status, body, _ = asyncio.run(attempt(stack.url(KEYS_ONLY)))
    assert status == 401 and body["code"] == 900902
    assert "?apikey=API_KEY" in body["description"]
    assert "choreo-api-key" in body["description"]


def test_api_key_ip_and_referrer_restrictions(stack: Stack) -> None:
    here = stack.api_key(jti="key-ip-ok", ips="10.0.0.0/8, 127.0.0.1")
    elsewhere = stack.api_key(jti="key-ip-no", ips="10.0.0.0/8,192.168.1.7")
    assert asyncio.run(attempt(stack.url(KEYS_ONLY), {"apikey": here}))[0] == 101
    status, body, _ = asyncio.run(attempt(stack.url(KEYS_ONLY), {"apikey": elsewhere}))
    assert status == 403 and body["code"] == 900908, body
    assert "IP address" in body["description"]

    referred = stack.api_key(jti="key-ref", referers="app.example.com/*")
    good = {"apikey": referred, "Referer": "https://app.example.com/chat.html"}
    assert asyncio.run(attempt(stack.url(KEYS_ONLY), good))[0] == 101
    for bad in ({"Referer": "https://evil.example/app.example.com/"}, {}):
        status, body, _ = asyncio.run(attempt(stack.url(KEYS_ONLY), {"apikey": referred, **bad}))
        assert status == 403 and body["code"] == 900908, body
        assert "referrer" in body["description"]


def test_origin_not_allowed_is_403_json_before_any_backend_connection(stack: Stack) -> None:
    token = stack.oauth_token()
    auth = {"Authorization": f"Bearer {token}"}
    before = len(stack.backend.accepted)
    for url, origin in (
        (stack.url(BOTH), "https://evil.example"),
        (stack.url(BOTH), "http://localhost:3000"),  # the API's own list replaces the default
        (stack.url(KEYS_ONLY), "https://app.example.com"),  # gateway default: this machine
    ):
        headers = auth if url == stack.url(BOTH) else {"apikey": stack.api_key(jti="key-o")}
        status, body, _ = asyncio.run(attempt(url, headers, origin=origin))
        assert status == 403, (url, origin, body)
        assert body["code"] == 900908 and "is not allowed to connect" in body["description"]
    assert len(stack.backend.accepted) == before  # no backend connection was opened
    allowed: list[tuple[str, dict[str, str], str | None]] = [
        (stack.url(BOTH), auth, APP_ORIGIN),
        (stack.url(KEYS_ONLY), {"apikey": stack.api_key(jti="key-o2")}, "http://localhost:5173"),
        (stack.url(KEYS_ONLY), {"apikey": stack.api_key(jti="key-o3")}, None),
    ]
    for url, headers, maybe in allowed:
        assert asyncio.run(attempt(url, headers, origin=maybe))[0] == 101, (url, maybe)


async def _revocation_closes(stack: Stack, key: str) -> float:
    async with connect(stack.url(KEYS_ONLY, f"apikey={key}"), open_timeout=10) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        started = time.monotonic()
        await asyncio.to_thread(stack.put, ("key-revoked",))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 2)
        elapsed = time.monotonic() - started
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
        return elapsed


def test_revoked_api_key_is_401_and_its_live_socket_closes_with_1008(stack: Stack) -> None:
    key = stack.api_key(jti="key-revoked")
    try:
        elapsed = asyncio.run(_revocation_closes(stack, key))
        print(f"\nrevoked API key: live socket closed with 1008 after {elapsed * 1000:.0f} ms")
        assert elapsed < PROMPT
        status, body, _ = asyncio.run(attempt(stack.url(KEYS_ONLY), {"apikey": key}))
        assert status == 401 and body["description"] == "API key revoked", body
    finally:
        stack.put()


def test_test_keys_are_refused_on_control_plane_apis_by_default(stack: Stack) -> None:
    answer = httpx.post(f"{stack.pair.enforcer_http}/testkey", auth=("admin", "admin"), timeout=10)
    assert answer.status_code == 200, answer.text
    testkey = answer.text.strip()
    stack.tokens.append(testkey)
    status, body, _ = asyncio.run(attempt(stack.url(BOTH), {"Authorization": f"Bearer {testkey}"}))
    assert status == 401 and body["code"] == 900901, body
    assert "Test keys are not accepted" in body["description"]


# The browser forms in a real Chromium through the whole stack: tests/browser/.


# ---- no token text anywhere --------------------------------------------------------------------


def test_no_token_text_in_any_log_line_or_analytics_event(stack: Stack) -> None:
    # Last in this module (pytest -p no:randomly keeps file order; with random order it still
    # checks whatever ran before it, and ends with a run of its own).
    token, key = stack.oauth_token("grep"), stack.api_key(jti="key-grep")
    for url, headers, offer in (
        (stack.url(BOTH, f"access_token={token}"), {}, None),
        (stack.url(BOTH), {"Authorization": f"Bearer {token}"}, ["choreo-oauth2-key", token]),
        (stack.url(BOTH, f"apikey={key}&access_token={token}"), {}, None),  # disagree: 401
        (stack.url(KEYS_ONLY), {}, ["choreo-api-key", key]),
    ):
        asyncio.run(attempt(url, headers, offer))

    def handshake_events() -> bool:
        lines = stack.analytics.read_text().splitlines() if stack.analytics.exists() else []
        return any(
            '"event": "handshake"' in line or '"event":"handshake"' in line for line in lines
        )

    wait_for(handshake_events, 30, "handshake events in the analytics file")
    logs = sorted(stack.data_dir.glob("*.log"))
    assert {p.name for p in logs} >= {"adapter.log", "enforcer.log", "router.log"}
    events = stack.analytics.read_text().splitlines()
    assert any(json.loads(line).get("event") == "handshake" for line in events), events[:3]
    texts = {p.name: p.read_text(errors="replace") for p in logs}
    texts["analytics"] = "\n".join(events)
    assert sum(t.count("\n") for t in texts.values()) > 20  # the run did log
    for secret in stack.tokens:
        signature = secret.rsplit(".", 1)[1]
        for name, text in texts.items():
            assert secret not in text, f"a token is in {name}"
            assert signature not in text, f"a token signature is in {name}"
