"""Control-plane settings: ``WSGATE_CP_*``, ``WSGATE_DATABASE_URL`` and the common ones."""

from __future__ import annotations

from pathlib import Path

from control_plane.roles import parse_roles, roles_of
from wsgate_common.documents import Budget
from wsgate_common.settings import CommonSettings, parse_users


class ControlPlaneSettings(CommonSettings):
    """Everything the control plane reads from its environment (or its command line)."""

    cp_host: str = "0.0.0.0"
    cp_port: int = 9443
    #: Empty means a SQLite file in the data directory.
    database_url: str = ""
    cp_adapter_address: str = "localhost:18001"
    cp_users: str = "admin:admin"
    #: Roles per user, ``"dev=subscriber;pub=publisher,subscriber"``. A user not listed is
    #: ``admin`` when named admin and ``subscriber`` otherwise (see control_plane/roles.py).
    cp_roles: str = ""
    #: Seconds between adapter Status polls (and re-syncs when its boot id changes).
    cp_sync_interval: float = 1.0
    #: Longest wait (seconds) between re-sync attempts while the adapter refuses or fails them
    #: (the wait doubles from ``cp_sync_interval`` after each failure).
    cp_sync_max_backoff: float = 30.0
    #: SQLite only: how long (seconds) a write waits for another writer's lock before it
    #: fails with "database is locked".
    database_busy_timeout: float = 30.0
    #: Seconds one Deploy/Undeploy/Sync call may take before the adapter counts as unreachable.
    cp_adapter_timeout: float = 5.0
    #: ``iss`` of the access tokens the OAuth2 service signs.
    cp_token_issuer: str = "https://localhost:9443/oauth2/token"
    #: Lifetime (seconds) of a token when the key or request does not say otherwise.
    cp_token_validity: int = 3600
    #: ``iss`` of API keys; empty means ``cp_token_issuer`` + ``/apikey``.
    cp_api_key_issuer: str = ""
    #: Longest ``validityPeriod`` (seconds) an API key may ask for; -1 (never expires) is
    #: always allowed, as in WSO2.
    cp_api_key_max_validity: int = 31_536_000
    #: Where browsers reach the router, for the consoles' URLs and their CSP connect-src.
    #: Empty host means the host the browser used to open the console.
    cp_router_host: str = ""
    cp_router_ws_port: int = 9090
    cp_router_wss_port: int = 9095
    #: Budget for one uploaded document (AsyncAPI import): bytes, YAML/JSON values, seconds.
    cp_document_max_bytes: int = 5 * 1024 * 1024
    cp_document_max_nodes: int = 100_000
    cp_document_timeout: float = 5.0
    #: Developer-portal applications one user may own.
    cp_max_applications_per_user: int = 100
    #: Largest request body (bytes) the control plane reads; larger ones are 413 unread.
    cp_max_request_bytes: int = 6 * 1024 * 1024

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, defaulting to ``<data_dir>/control-plane.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'control-plane.db').resolve()}"

    @property
    def document_budget(self) -> Budget:
        return Budget(
            max_bytes=self.cp_document_max_bytes,
            max_nodes=self.cp_document_max_nodes,
            max_seconds=self.cp_document_timeout,
        )

    @property
    def state_dir(self) -> Path:
        """Where the control plane keeps files of its own (the token signing key)."""
        return self.data_dir / "control-plane"

    @property
    def users(self) -> dict[str, str]:
        """User name -> password for HTTP Basic auth."""
        return parse_users(self.cp_users)

    @property
    def roles(self) -> dict[str, frozenset[str]]:
        """User name -> roles, for every configured user.

        Raises:
            ValueError: ``cp_roles`` is malformed.
        """
        listed = parse_roles(self.cp_roles)
        return {name: roles_of(name, listed) for name in self.users}
