"""A real enforcer trusting an issuer from its issuers file by ``jwks_url`` (a local JWKS HTTP
server), with an audience check: keys fetched at start, tokens for another audience refused,
an unknown ``kid`` does not make it hammer the JWKS endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from enforcer.testkey import public_jwk
from tests.integration.adapter_enforcer import adapter_and_enforcer
from tests.procs import wait_for
from wsgate_common.grpc_tls import GrpcTls
from wsgate_proto import (
    definition_pb2,
    deploy_pb2,
    deploy_pb2_grpc,
    enforcer_pb2,
    enforcer_pb2_grpc,
)

pytestmark = pytest.mark.integration

API_ID = "issuers-file-api"
ISS = "https://idp.example/oauth2/token"
AUDIENCE = "wsgate-gw"


class Jwks:
    """A JWKS endpoint on a free port (a thread of this test process), counting its GETs."""

    def __init__(self, document: dict[str, object]) -> None:
        self.document = document
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Jwks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Setup:
    enforcer: str
    tls: GrpcTls
    key: rsa.RSAPrivateKey
    jwks: Jwks

    def token(self, kid: str = "k1", aud: str | None = AUDIENCE) -> str:
        now = int(time.time())
        claims: dict[str, object] = {"iss": ISS, "sub": "dave", "exp": now + 600, "jti": "j"}
        if aud is not None:
            claims["aud"] = aud
        return jwt.encode(claims, self.key, "RS256", headers={"kid": kid})

    def check(self, token: str) -> enforcer_pb2.HandshakeResponse:
        with self.tls.channel(self.enforcer) as channel:
            return enforcer_pb2_grpc.HandshakeServiceStub(channel).Check(
                enforcer_pb2.HandshakeRequest(
                    request_id="it", api_id=API_ID, topic="/t", authorization=f"Bearer {token}"
                ),
                timeout=10,
            )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data_dir: Path = tmp_path_factory.mktemp("issuers-file")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**public_jwk(key.public_key()), "kid": "k1", "alg": "RS256", "use": "sig"}
    with Jwks({"keys": [jwk]}) as jwks:
        issuers = data_dir / "issuers.yaml"
        issuers.write_text(
            "issuers:\n"
            "  - name: idp\n"
            f"    issuer: {ISS}\n"
            f"    jwks_url: {jwks.url}\n"
            f"    audience: [{AUDIENCE}]\n"
            "    check_subscriptions: false\n"
        )
        env = {"WSGATE_ENFORCER_ISSUERS_FILE": str(issuers)}
        with adapter_and_enforcer(data_dir, env) as pair:
            api = definition_pb2.ApiDefinition(
                id=API_ID,
                name="Idp",
                version="1.0.0",
                context="/idp",
                api_type="WS",
                provider="admin",
                lifecycle_status="PUBLISHED",
                production_endpoint=definition_pb2.Endpoint(url="ws://127.0.0.1:9"),
                operations=[definition_pb2.Operation(target="/t", verb="SUBSCRIBE")],
            )
            with pair.tls.channel(pair.deploy_address) as channel:
                deploy_pb2_grpc.DeploymentServiceStub(channel).Deploy(
                    deploy_pb2.DeployRequest(api=api), timeout=10
                )
            yield Setup(pair.enforcer_address, pair.tls, key, jwks)


def test_issuer_from_the_file_by_jwks_url_with_an_audience(setup: Setup) -> None:
    # Fetched at start (the entry gives no other key), before any token asked for it.
    wait_for(lambda: setup.jwks.hits >= 1, 10, "the enforcer to fetch the JWKS at start")
    wait_for(lambda: setup.check(setup.token()).http_status != 404, 10, "the API in the enforcer")
    allowed = setup.check(setup.token())
    assert allowed.allowed, allowed
    assert allowed.subscriber == "dave" and allowed.credential_kind == "oauth2"
    for aud in ("another-gateway", None):
        refused = setup.check(setup.token(aud=aud))
        assert (refused.allowed, refused.http_status, refused.error_code) == (False, 401, 900901)
        print(f"\naud={aud!r}: {refused.description}")
    hits = setup.jwks.hits
    # Made-up kids right after the start fetch: refused, and no fetch per token.
    for i in range(5):
        refused = setup.check(setup.token(kid=f"made-up-{i}"))
        assert (refused.http_status, refused.error_code) == (401, 900901)
    assert setup.jwks.hits <= hits + 1, (hits, setup.jwks.hits)
