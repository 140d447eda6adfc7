"""The settings every component has; each component subclasses this with its own fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Fields shared by all components, read from ``WSGATE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="WSGATE_", extra="ignore")

    data_dir: Path = Path(".wsgate")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # gRPC between components (wsgate_common/grpc_tls.py): "mtls" with the pki files (or these
    # paths), or "plaintext" for development; the same value on every component of a stack.
    grpc_tls: Literal["mtls", "plaintext"] = "mtls"
    grpc_ca: Path | None = None
    grpc_cert: Path | None = None
    grpc_key: Path | None = None
    # Verify this name in server certificates instead of the host of the address.
    grpc_server_name: str = ""
    # Let a component listen beyond loopback with the built-in admin:admin user (a demo only;
    # see wsgate_common/safety.py). Also the --insecure-dev flag.
    insecure_dev: bool = False

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"


def parse_users(spec: str) -> dict[str, str]:
    """Parse ``"alice:secret,bob:pw"`` into a username -> password map.

    Raises:
        ValueError: an entry has no ``:`` or an empty user name.
    """
    users: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, password = entry.partition(":")
        if not sep or not name:
            raise ValueError(f"user entry {entry!r} is not 'name:password'")
        users[name] = password
    return users
