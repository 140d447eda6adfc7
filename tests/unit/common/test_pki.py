"""The local CA: created once, reused, and a server certificate valid for localhost."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from pathlib import Path

from cryptography import x509

from wsgate_common.pki import ensure_pki


def test_creates_ca_and_server_cert_signed_by_it(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert (pki.key.stat().st_mode & 0o777) == 0o600


def test_second_call_reuses_material(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path / "pki")
    before = first.cert.read_bytes(), first.ca_cert.read_bytes()
    second = ensure_pki(tmp_path / "pki")
    assert (second.cert.read_bytes(), second.ca_cert.read_bytes()) == before


def test_missing_leaf_is_reissued_by_existing_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    ca_before = pki.ca_cert.read_bytes()
    pki.cert.unlink()
    again = ensure_pki(tmp_path / "pki")
    assert again.ca_cert.read_bytes() == ca_before
    assert again.cert.exists()


def test_concurrent_callers_agree_on_one_ca(tmp_path: Path) -> None:
    results: list[bytes] = []

    def call() -> None:
        results.append(ensure_pki(tmp_path / "pki").ca_cert.read_bytes())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1


def test_usable_as_tls_server_and_client_trust(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.cert, pki.key)
    client = ssl.create_default_context(cafile=str(pki.ca_cert))
    assert client.verify_mode == ssl.CERT_REQUIRED


def test_material_issued_elsewhere_is_used_without_a_ca_key(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    (tmp_path / "pki" / "ca-key.pem").unlink()
    before = pki.cert.read_bytes(), pki.ca_cert.read_bytes()
    again = ensure_pki(tmp_path / "pki")
    assert (again.cert.read_bytes(), again.ca_cert.read_bytes()) == before
    assert not (tmp_path / "pki" / "ca-key.pem").exists()
