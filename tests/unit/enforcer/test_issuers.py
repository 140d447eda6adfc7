from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from enforcer.issuers import Issuer, IssuerRegistry, load_issuers_file
from enforcer.testkey import TestKeySigner
from enforcer.tokens import validate

from .conftest import NOW, claims


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "km")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_file_issuer(tmp_path: Path, other_rsa_key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "km.pem").write_bytes(_certificate(other_rsa_key))
    (tmp_path / "issuers.yaml").write_text(
        "issuers:\n"
        "  - name: km\n"
        "    issuer: https://km.example/token\n"
        "    certificate: km.pem\n"
        "    audience: gateway\n"
    )
    [issuer] = load_issuers_file(tmp_path / "issuers.yaml")
    assert issuer.algorithms == ("RS256",)
    assert issuer.audience == ("gateway",)
    token = jwt.encode(
        claims(iss="https://km.example/token", aud="gateway"),
        other_rsa_key,
        "RS256",
        headers={"kid": "whatever"},  # a key configured without kid verifies any kid
    )
    assert validate(token, IssuerRegistry([issuer]), NOW).subject == "alice"


def test_jwks_issuer_from_json(tmp_path: Path, signer: TestKeySigner) -> None:
    (tmp_path / "issuers.json").write_text(
        json.dumps([{"name": "j", "issuer": "https://j.example", "jwks": signer.jwks()}])
    )
    [issuer] = load_issuers_file(tmp_path / "issuers.json")
    assert set(issuer.keys) == {signer.kid}
    token = jwt.encode(
        claims(iss="https://j.example", aud=None),
        signer.private_key,
        "RS256",
        headers={"kid": signer.kid},
    )
    assert validate(token, IssuerRegistry([issuer]), NOW).issuer_name == "j"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "issuer": "i", "jwks": {"keys": []}, "algorithms": ["HS256"]}, "HS256"),
        ({"name": "x", "issuer": "i", "jwks": {"keys": []}, "algorithms": ["none"]}, "none"),
        ({"name": "x", "issuer": "i", "jwks_url": "ftp://i/jwks"}, "http"),
        ({"name": "x", "issuer": "i", "jwks_url": ["https://i/jwks"]}, "http"),
        ({"name": "x", "issuer": "i", "jwks_url": "https://i/j", "audience": 3}, "audience"),
        ({"name": "x", "issuer": "i"}, "exactly one"),
        ({"name": "x", "issuer": "i", "jwks": {"keys": []}, "jwks_file": "f"}, "exactly one"),
        ({"name": "x", "issuer": "i", "jwks": {"keys": []}}, "JWKS"),
        ({"issuer": "i", "jwks": {}}, "name"),
    ],
)
def test_bad_entries(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    (tmp_path / "issuers.json").write_text(json.dumps({"issuers": [entry]}))
    with pytest.raises(ValueError, match=message):
        load_issuers_file(tmp_path / "issuers.json")


def test_jwks_url_issuer_from_yaml(tmp_path: Path, signer: TestKeySigner) -> None:
    """A jwks_url alone is a key source (keys are fetched later); with inline keys too, those
    verify at once and the URL serves rotations. ``audience`` may be a string or a list."""
    (tmp_path / "issuers.yaml").write_text(
        "issuers:\n"
        "  - name: idp\n"
        "    issuer: https://idp.example\n"
        "    jwks_url: https://idp.example/jwks\n"
        "    audience: [gw-a, gw-b]\n"
        "  - name: both\n"
        "    issuer: https://both.example\n"
        f"    jwks: {json.dumps(signer.jwks())}\n"
        "    jwks_url: http://127.0.0.1:1/jwks\n"
    )
    idp, both = load_issuers_file(tmp_path / "issuers.yaml")
    assert (idp.jwks_url, dict(idp.keys), idp.default_key) == ("https://idp.example/jwks", {}, None)
    assert idp.audience == ("gw-a", "gw-b")
    assert both.jwks_url == "http://127.0.0.1:1/jwks" and set(both.keys) == {signer.kid}
    assert both.audience == ()


def test_symmetric_jwk_is_not_a_key(tmp_path: Path) -> None:
    jwks = {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}
    (tmp_path / "i.json").write_text(json.dumps([{"name": "x", "issuer": "i", "jwks": jwks}]))
    with pytest.raises(ValueError):
        load_issuers_file(tmp_path / "i.json")


def test_key_must_fit_algorithms(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="cannot verify RS256"):
        Issuer(name="x", issuer="i", algorithms=("RS256",), default_key=ec_key.public_key())


def test_registry_rejects_duplicate_issuer(signer: TestKeySigner) -> None:
    with pytest.raises(ValueError, match="twice"):
        IssuerRegistry([signer.as_issuer(), signer.as_issuer()])


def test_with_keys_swaps_keys(signer: TestKeySigner, other_rsa_key: rsa.RSAPrivateKey) -> None:
    issuer = signer.as_issuer()
    rotated = issuer.with_keys({"new": other_rsa_key.public_key()})
    assert rotated.key_for("new") is not None
    assert rotated.key_for(signer.kid) is None
    assert issuer.key_for(signer.kid) is not None
