"""Transport security and keepalives of every gRPC connection between wsgate components.

One setting, read by every component under the same name, picks the mode:

* ``WSGATE_GRPC_TLS=mtls`` (default): servers present ``<data_dir>/pki/server.pem`` and require a
  client certificate signed by ``<data_dir>/pki/ca.pem``; clients verify the server against the
  same CA and present the same certificate (its EKU has serverAuth and clientAuth). All
  components of one stack therefore share one data dir (or one copied ``pki``); a peer whose
  certificate comes from another CA is refused at the TLS handshake.
* ``WSGATE_GRPC_TLS=plaintext``: no TLS at all, for development.

``WSGATE_GRPC_CA`` / ``WSGATE_GRPC_CERT`` / ``WSGATE_GRPC_KEY`` point elsewhere than the pki
files; ``WSGATE_GRPC_SERVER_NAME`` makes clients verify that name in the server certificate
instead of the host of the address (``grpc.ssl_target_name_override``), e.g. when Kubernetes
Service names are not in the certificate.

The option lists here are the only place keepalive and message-size limits are set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from wsgate_common.pki import ensure_pki
from wsgate_common.settings import CommonSettings

TlsMode = Literal["mtls", "plaintext"]
Option = tuple[str, int | str]

#: The largest message either side accepts or sends (a full subscription data set for
#: PutSubscriptionData, a snapshot of 10,000 APIs over xDS).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Clients ping every 30 s, also on idle streams, and drop a peer silent for 10 s more.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
#: Servers accept pings this often (below the clients' interval, so no "too_many_pings").
SERVER_MIN_PING_INTERVAL_MS = 10_000
#: Servers ping idle clients too, to drop streams of routers that vanished.
SERVER_KEEPALIVE_TIME_MS = 60_000
SERVER_KEEPALIVE_TIMEOUT_MS = 20_000

CHANNEL_OPTIONS: tuple[Option, ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

SERVER_OPTIONS: tuple[Option, ...] = (
    ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)

# What a TLS mismatch looks like in grpc's error details, in either direction.
_HANDSHAKE_SIGNS = (
    "handshake",
    "ssl",
    "tls",
    "certificate",
    "socket closed",
    "connection reset",
    "end of tcp stream",
    "failed to connect",
)


def merge_options(base: Sequence[Option], extra: Sequence[Option] = ()) -> list[Option]:
    """``base`` with the keys of ``extra`` replaced or added (grpc takes duplicates unevenly)."""
    merged = dict(base)
    merged.update(extra)
    return list(merged.items())


def mismatch_hint(details: str, mode: TlsMode) -> str:
    """A hint to append to a connection error that may be a TLS mismatch, else ``""`` (also
    for a refused connection: nobody listens yet, whatever the TLS settings)."""
    lowered = details.lower()
    if "connection refused" in lowered or not any(s in lowered for s in _HANDSHAKE_SIGNS):
        return ""
    if mode == "plaintext":
        return (
            " [WSGATE_GRPC_TLS=plaintext here: a peer that requires mTLS closes the connection; "
            "use the same WSGATE_GRPC_TLS on every component]"
        )
    return (
        " [WSGATE_GRPC_TLS=mtls here: the peer may be plaintext, or its certificate is not "
        "from our CA (share one data dir / pki, or set WSGATE_GRPC_CA/_CERT/_KEY)]"
    )


def describe_error(exc: grpc.RpcError, mode: TlsMode) -> str:
    """``CODE: details`` of a failed call on one line, with :func:`mismatch_hint` when it
    applies (never the exception's multi-line repr)."""
    code = status_code(exc)
    details_of = getattr(exc, "details", None)
    details = (details_of() if callable(details_of) else None) or str(exc)
    details = " ".join(details.split())  # one line, whatever grpc put in it
    name = code.name if code is not None else type(exc).__name__
    hint = mismatch_hint(details, mode) if code == grpc.StatusCode.UNAVAILABLE else ""
    return f"{name}: {details}{hint}"


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The status a failed call ended with: sync calls are ``grpc.Call``s, but
    ``grpc.aio.AioRpcError`` is not, so ask for ``code()`` by duck typing."""
    code_of = getattr(exc, "code", None)
    code = code_of() if callable(code_of) else None
    return code if isinstance(code, grpc.StatusCode) else None


def check_pair(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """Fail early on files grpc would only reject at the first handshake.

    Raises:
        ValueError: unreadable PEM, a key that does not belong to the certificate, or a
            certificate not issued by the CA.
    """
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ValueError(f"unreadable PEM: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != cert.public_key().public_bytes(
        encoding, public
    ):
        raise ValueError("the private key does not belong to the certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:
        raise ValueError(f"the certificate is not issued by the CA: {exc}") from None


@dataclass(frozen=True)
class GrpcTls:
    """How one component's gRPC servers listen and its channels connect."""

    mode: TlsMode = "plaintext"
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""
    server_name: str = ""

    @property
    def secure(self) -> bool:
        return self.mode == "mtls"

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS with this certificate, demanding a client certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS verifying the server against the CA, presenting this certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )

    def channel_options(self, extra: Sequence[Option] = ()) -> list[Option]:
        options = merge_options(CHANNEL_OPTIONS, extra)
        if self.secure and self.server_name:
            options = merge_options(options, [("grpc.ssl_target_name_override", self.server_name)])
        return options

    def server_options(self, extra: Sequence[Option] = ()) -> list[Option]:
        return merge_options(SERVER_OPTIONS, extra)

    def add_port(self, server: grpc.Server | grpc.aio.Server, address: str) -> int:
        """Listen on ``address`` (mTLS or plaintext); returns the bound port (0 = failed)."""
        if self.secure:
            return server.add_secure_port(address, self.server_credentials())
        return server.add_insecure_port(address)

    def aio_channel(self, address: str, extra: Sequence[Option] = ()) -> grpc.aio.Channel:
        options = self.channel_options(extra)
        if self.secure:
            return grpc.aio.secure_channel(address, self.channel_credentials(), options=options)
        return grpc.aio.insecure_channel(address, options=options)

    def channel(self, address: str, extra: Sequence[Option] = ()) -> grpc.Channel:
        """A blocking channel (tests, scripts)."""
        options = self.channel_options(extra)
        if self.secure:
            return grpc.secure_channel(address, self.channel_credentials(), options=options)
        return grpc.insecure_channel(address, options=options)

    def describe(self, exc: grpc.RpcError) -> str:
        return describe_error(exc, self.mode)


PLAINTEXT = GrpcTls("plaintext")


def from_files(ca: Path, cert: Path, key: Path, server_name: str = "") -> GrpcTls:
    """mTLS with these PEM files.

    Raises:
        OSError: a file cannot be read.
        ValueError: see :func:`check_pair`.
    """
    ca_pem, cert_pem, key_pem = ca.read_bytes(), cert.read_bytes(), key.read_bytes()
    check_pair(ca_pem, cert_pem, key_pem)
    return GrpcTls("mtls", ca_pem, cert_pem, key_pem, server_name)


def from_pki_dir(pki_dir: Path, server_name: str = "") -> GrpcTls:
    """mTLS with the local CA's files in ``pki_dir`` (created when missing)."""
    pki = ensure_pki(pki_dir)
    return from_files(pki.ca_cert, pki.cert, pki.key, server_name)


def resolve(
    mode: TlsMode,
    pki_dir: Path,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    server_name: str = "",
) -> GrpcTls:
    """The component's gRPC transport from its settings (see the module docstring).

    Raises:
        OSError, ValueError: the certificate files are missing or do not fit together.
    """
    if mode == "plaintext":
        return PLAINTEXT
    if ca is None or cert is None or key is None:
        pki = ensure_pki(pki_dir)
        ca, cert, key = ca or pki.ca_cert, cert or pki.cert, key or pki.key
    return from_files(ca, cert, key, server_name)


def for_settings(settings: CommonSettings) -> GrpcTls:
    """:func:`resolve` with a component's ``WSGATE_GRPC_*`` settings."""
    return resolve(
        settings.grpc_tls,
        settings.pki_dir,
        settings.grpc_ca,
        settings.grpc_cert,
        settings.grpc_key,
        settings.grpc_server_name,
    )


def summary(tls: GrpcTls) -> str:
    """For the start-up log line: the mode and, with mTLS, whose CA."""
    if not tls.secure:
        return "plaintext (WSGATE_GRPC_TLS=plaintext)"
    ca = x509.load_pem_x509_certificate(tls.ca_pem)
    fingerprint = ca.fingerprint(hashes.SHA256()).hex()[:16]
    name = f", server name {tls.server_name}" if tls.server_name else ""
    return f"mTLS, CA {ca.subject.rfc4514_string()} sha256:{fingerprint}{name}"
