"""Trusted token issuers ("key managers"): who may sign tokens, with which keys and algorithms.

Algorithms are pinned per issuer and never read from a token. Keys come from a PEM public key or
certificate, or from a JWKS document; an issuer remembers its ``jwks_url`` so that the refresher
(:mod:`enforcer.jwks`) can fetch keys when a token names an unknown ``kid`` (see
:class:`enforcer.denials.UnknownKeyError`) and swap in ``issuer.with_keys(...)``. Issuers come
from three places, merged by :mod:`enforcer.keymanagers`: the built-in test-key issuer, the
optional issuers file, and the KeyManager resources streamed over xDS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from wsgate_common import documents

OAUTH2 = "oauth2"
API_KEY = "api_key"
TOKEN_KINDS = (OAUTH2, API_KEY)

VerifyKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

# Which key type each algorithm needs; symmetric algorithms (HS*) and "none" are never accepted,
# which is what rules out key confusion (an RSA public key used as an HMAC secret).
ALGORITHM_KEY_TYPES: dict[str, tuple[type, ...]] = {
    **{alg: (rsa.RSAPublicKey,) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    **{alg: (ec.EllipticCurvePublicKey,) for alg in ("ES256", "ES384", "ES512")},
    "EdDSA": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}


@dataclass(frozen=True)
class Issuer:
    """One trusted issuer, matched by the token's ``iss`` claim.

    Attributes:
        keys: verification keys by ``kid``.
        default_key: a key configured without a ``kid``; used for any token of this issuer.
        audience: when non-empty, the token's ``aud`` must contain one of these.
        check_subscriptions: False for the built-in test-key issuer, whose tokens carry no
            application to look a subscription up for.
        consumer_key_claim: the claim holding the OAuth2 client id (the consumer key).
        token_kind: "oauth2" (access tokens) or "api_key" (API keys, which name their
            application and key type themselves and may never expire).
        test_key: the built-in test-key issuer (refused on control-plane APIs unless allowed).
    """

    name: str
    issuer: str
    algorithms: tuple[str, ...]
    keys: Mapping[str, VerifyKey] = field(default_factory=dict)
    default_key: VerifyKey | None = None
    audience: tuple[str, ...] = ()
    check_subscriptions: bool = True
    jwks_url: str | None = None
    consumer_key_claim: str = "azp"
    token_kind: str = OAUTH2
    test_key: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.issuer:
            raise ValueError("an issuer needs a name and an issuer string")
        if self.token_kind not in TOKEN_KINDS:
            raise ValueError(
                f"issuer {self.name!r}: token kind {self.token_kind!r} is not "
                f"{' or '.join(TOKEN_KINDS)}"
            )
        if not self.algorithms:
            raise ValueError(f"issuer {self.name!r}: no algorithms")
        for alg in self.algorithms:
            if alg not in ALGORITHM_KEY_TYPES:
                raise ValueError(
                    f"issuer {self.name!r}: algorithm {alg!r} is not allowed "
                    f"(use one of {', '.join(ALGORITHM_KEY_TYPES)})"
                )
        allowed = tuple(t for alg in self.algorithms for t in ALGORITHM_KEY_TYPES[alg])
        every_key = [*self.keys.values(), *([self.default_key] if self.default_key else [])]
        if not every_key and not self.jwks_url:
            raise ValueError(f"issuer {self.name!r}: no verification key")
        for key in every_key:
            if not isinstance(key, allowed):
                raise ValueError(
                    f"issuer {self.name!r}: a {type(key).__name__} cannot verify "
                    f"{'/'.join(self.algorithms)}"
                )

    def key_for(self, kid: str | None) -> VerifyKey | None:
        """The key to verify a token with ``kid`` (None when the header has none)."""
        if kid is not None and kid in self.keys:
            return self.keys[kid]
        if self.default_key is not None:
            return self.default_key
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return None

    def with_keys(self, keys: Mapping[str, VerifyKey]) -> Issuer:
        """A copy holding ``keys`` instead (what a JWKS refresher swaps in)."""
        return replace(self, keys=dict(keys))


class IssuerRegistry:
    """Issuers by ``iss`` string; immutable, so a refresher builds a new one and swaps it."""

    def __init__(self, issuers: Iterable[Issuer]) -> None:
        by_iss: dict[str, Issuer] = {}
        for issuer in issuers:
            if issuer.issuer in by_iss:
                raise ValueError(f"issuer {issuer.issuer!r} is configured twice")
            by_iss[issuer.issuer] = issuer
        self._by_iss = by_iss

    def get(self, iss: str) -> Issuer | None:
        return self._by_iss.get(iss)

    def __iter__(self) -> Any:
        return iter(self._by_iss.values())

    def __len__(self) -> int:
        return len(self._by_iss)


def load_pem_key(pem: bytes) -> VerifyKey:
    """A public key from a PEM certificate or a PEM public key.

    Raises:
        ValueError: neither, or a key type tokens cannot be verified with.
    """
    key: object
    if b"-----BEGIN CERTIFICATE-----" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, VerifyKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, VerifyKey]:
    """Public keys by ``kid`` from a JWKS document; keys without a ``kid`` or symmetric ones
    are skipped.

    Raises:
        ValueError: the document holds no usable key.
    """
    try:
        key_set = PyJWKSet.from_dict(dict(jwks))
    except (PyJWKSetError, PyJWKError) as exc:
        raise ValueError(f"bad JWKS: {exc}") from exc
    keys: dict[str, VerifyKey] = {}
    for jwk in key_set.keys:
        if jwk.key_id and isinstance(jwk.key, VerifyKey):
            keys[jwk.key_id] = jwk.key
    if not keys:
        raise ValueError("JWKS holds no public key with a kid")
    return keys


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a list of strings")


def issuer_from_config(entry: Mapping[str, Any], base_dir: Path) -> Issuer:
    """Build an issuer from one entry of the issuers file (relative paths from ``base_dir``).

    Keys: ``name``, ``issuer``, ``algorithms`` (default ``[RS256]``), ``audience`` (a string
    or a list: the token's ``aud`` must hold one of them; unchecked when absent),
    ``check_subscriptions`` (default true), and the keys: at most one of ``certificate`` (path
    to a PEM certificate or public key), ``certificate_pem`` (inline PEM), ``jwks`` (inline
    JWKS) or ``jwks_file``, and/or ``jwks_url`` (an http(s) JWKS endpoint, fetched like a key
    manager's: at start when no other key is given, then whenever a token names an unknown
    ``kid``, at most once per 10 s; see :mod:`enforcer.jwks`); ``kid`` names a PEM key.
    """
    name = entry.get("name")
    iss = entry.get("issuer")
    if not isinstance(name, str) or not isinstance(iss, str):
        raise ValueError("every issuer needs string 'name' and 'issuer'")
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None and (
        not isinstance(jwks_url, str) or not jwks_url.startswith(("https://", "http://"))
    ):
        raise ValueError(f"issuer {name!r}: jwks_url must be an http(s) URL")
    sources = [k for k in ("certificate", "certificate_pem", "jwks", "jwks_file") if k in entry]
    if len(sources) > 1 or (not sources and jwks_url is None):
        raise ValueError(
            f"issuer {name!r}: give jwks_url and/or exactly one of certificate, certificate_pem, "
            "jwks, jwks_file"
        )
    source = sources[0] if sources else ""
    keys: dict[str, VerifyKey] = {}
    default_key: VerifyKey | None = None
    if not source:
        pass  # keys come from jwks_url only
    elif source in ("certificate", "certificate_pem"):
        pem = (
            (base_dir / str(entry["certificate"])).read_bytes()
            if source == "certificate"
            else str(entry["certificate_pem"]).encode()
        )
        key = load_pem_key(pem)
        kid = entry.get("kid")
        if kid is None:
            default_key = key
        else:
            keys[str(kid)] = key
    else:
        document = (
            json.loads((base_dir / str(entry["jwks_file"])).read_text())
            if source == "jwks_file"
            else entry["jwks"]
        )
        if not isinstance(document, Mapping):
            raise ValueError(f"issuer {name!r}: JWKS must be an object")
        keys = keys_from_jwks(document)
    check = entry.get("check_subscriptions", True)
    if not isinstance(check, bool):
        raise ValueError(f"issuer {name!r}: check_subscriptions must be true or false")
    return Issuer(
        name=name,
        issuer=iss,
        algorithms=_strings(entry.get("algorithms", ["RS256"]), "algorithms"),
        keys=keys,
        default_key=default_key,
        audience=_strings(entry.get("audience"), "audience"),
        check_subscriptions=check,
        jwks_url=jwks_url,
    )


def load_issuers_file(path: Path) -> list[Issuer]:
    """Issuers from a YAML or JSON file: ``{issuers: [entry, ...]}`` or a bare list.

    Raises:
        ValueError: the file is malformed (the message names the bad entry).
        OSError: it cannot be read.
    """
    try:
        document = documents.load(path.read_bytes())
    except documents.DocumentError as exc:
        raise ValueError(f"{path}: not usable YAML/JSON: {exc.message}") from exc
    entries = document.get("issuers") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of issuers")
    issuers = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: issuer #{index} is not an object")
        try:
            issuers.append(issuer_from_config(entry, path.parent))
        except (ValueError, OSError, KeyError) as exc:
            raise ValueError(f"{path}: issuer #{index}: {exc}") from exc
    return issuers
