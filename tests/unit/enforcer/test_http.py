"""The HTTP app, exercised in-process through httpx's ASGI transport."""

from __future__ import annotations

import base64

import httpx
import jwt

from enforcer.http import build_app
from enforcer.testkey import TestKeySigner

from .conftest import NOW

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()}


def client(signer: TestKeySigner, ready: bool = False) -> httpx.AsyncClient:
    app = build_app(signer, {"admin": "admin"}, lambda: ready, clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e")


async def test_testkey_returns_raw_jwt(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.post("/testkey", data={"scope": "read:pets"}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    payload = jwt.decode(response.text, options={"verify_signature": False})
    assert payload["scope"] == "read:pets"
    assert payload["sub"] == "admin"
    assert payload["exp"] == NOW + 3600


async def test_testkey_without_body(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.post("/testkey", headers=AUTH)
    assert response.status_code == 200
    assert "scope" not in jwt.decode(response.text, options={"verify_signature": False})


async def test_testkey_wrong_password(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.post("/testkey", auth=("admin", "nope"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["code"] == 900901


async def test_testkey_no_auth(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.post("/testkey", data={"scope": "x"})
    assert response.status_code == 401
    assert response.json()["code"] == 900902


async def test_testkey_bad_validity(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.post("/testkey", data={"validity_period": "soon"}, headers=AUTH)
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message", "description"}


async def test_health_ready_jwks(signer: TestKeySigner) -> None:
    async with client(signer, ready=False) as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}
        assert (await http.get("/ready")).status_code == 503
        jwks = (await http.get("/jwks")).json()
    assert jwks["keys"][0]["kid"] == signer.kid
    async with client(signer, ready=True) as http:
        assert (await http.get("/ready")).status_code == 200


async def test_unknown_path_is_json_error(signer: TestKeySigner) -> None:
    async with client(signer) as http:
        response = await http.get("/nope")
    assert response.status_code == 404
    assert response.json()["code"] == 404


async def test_testkey_disabled_is_404_json(signer: TestKeySigner) -> None:
    app = build_app(signer, {"admin": "admin"}, lambda: True, clock=lambda: NOW, testkeys=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
        response = await http.post("/testkey", headers=AUTH)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == 404 and "disabled" in body["description"]
    assert "WSGATE_TESTKEY_ENABLED" in body["description"]


async def test_testkey_validity_cap(signer: TestKeySigner) -> None:
    app = build_app(signer, {"admin": "admin"}, lambda: True, clock=lambda: NOW, max_validity=300)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
        default = await http.post("/testkey", headers=AUTH)
        too_long = await http.post("/testkey", data={"validity_period": "301"}, headers=AUTH)
    assert jwt.decode(default.text, options={"verify_signature": False})["exp"] == NOW + 300
    assert too_long.status_code == 400
