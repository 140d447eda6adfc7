"""The local certificate authority that `make run` uses: created once under ``<data_dir>/pki``.

Every component calls :func:`ensure_pki` at start; a file lock makes concurrent starts agree on
one CA instead of each writing its own.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files one component needs."""

    ca_cert: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsgate local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("wsgate local CA"))
        .issuer_name(_name("wsgate local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca-key.pem", _key_pem(key), private=True)
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_leaf(
    directory: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "server-key.pem", _key_pem(key), private=True)
    _write(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(pki_dir: Path) -> Pki:
    """Create the local CA and a server certificate for localhost unless they exist.

    Returns:
        Paths to the CA certificate, the server certificate and its key.
    """
    pki_dir.mkdir(parents=True, exist_ok=True)
    result = Pki(pki_dir / "ca.pem", pki_dir / "server.pem", pki_dir / "server-key.pem")
    with open(pki_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.ca_cert.exists() and result.cert.exists() and result.key.exists():
            # Issued elsewhere (a Kubernetes Secret, cert-manager): no CA key needed here.
            return result
        if not (pki_dir / "ca.pem").exists() or not (pki_dir / "ca-key.pem").exists():
            ca_cert, ca_key = _make_ca(pki_dir)
            for stale in ("server.pem", "server-key.pem"):
                (pki_dir / stale).unlink(missing_ok=True)
        else:
            ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
            loaded = serialization.load_pem_private_key(
                (pki_dir / "ca-key.pem").read_bytes(), password=None
            )
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{pki_dir / 'ca-key.pem'} is not an EC private key")
            ca_key = loaded
        _make_leaf(pki_dir, ca_cert, ca_key)
    return result
