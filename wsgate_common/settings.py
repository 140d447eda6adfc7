"""The settings every component has; each component subclasses this with its own fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from wsgate_common.backoff import BackoffPolicy


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
    # Backoff after failed sign-ins (wsgate_common/backoff.py), per user and per address.
    auth_backoff_free_failures: int = 5
    auth_backoff_base_delay: float = 1.0
    auth_backoff_max_delay: float = 60.0
    auth_backoff_decay: float = 60.0

    @property
    def backoff_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            free_failures=self.auth_backoff_free_failures,
            base_delay=self.auth_backoff_base_delay,
            max_delay=self.auth_backoff_max_delay,
            decay=self.auth_backoff_decay,
        )

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"


USERS_FORMAT = (
    "'name:password,name:password' (names of 1-64 letters, digits, '.', '_', '@', '-';"
    " passwords not empty and without ',' or ';')"
)
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def parse_users(spec: str) -> dict[str, str]:
    """Parse ``"alice:secret,bob:pw"`` into a username -> password map.

    Raises:
        ValueError: an entry that does not fit :data:`USERS_FORMAT` (a ``;``-separated list,
            a missing ``:``, an odd user name, an empty password); the message names the
            entry by position and never quotes a password.
    """
    if ";" in spec:
        raise ValueError(f"users contain ';': separate entries with ','; expected {USERS_FORMAT}")
    users: dict[str, str] = {}
    for index, entry in enumerate(filter(None, (part.strip() for part in spec.split(",")))):
        name, sep, password = entry.partition(":")
        if not sep or not _USER_NAME.fullmatch(name) or not password:
            raise ValueError(f"user entry #{index + 1} is malformed; expected {USERS_FORMAT}")
        users[name] = password
    return users
