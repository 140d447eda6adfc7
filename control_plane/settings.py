"""Control-plane settings: ``WSGATE_CP_*``, ``WSGATE_DATABASE_URL`` and the common ones."""

from __future__ import annotations

from wsgate_common.settings import CommonSettings, parse_users


class ControlPlaneSettings(CommonSettings):
    """Everything the control plane reads from its environment (or its command line)."""

    cp_host: str = "0.0.0.0"
    cp_port: int = 9443
    #: Empty means a SQLite file in the data directory.
    database_url: str = ""
    cp_adapter_address: str = "localhost:18001"
    cp_users: str = "admin:admin"
    #: Seconds between adapter Status polls (and re-syncs when its boot id changes).
    cp_sync_interval: float = 1.0
    #: Seconds one Deploy/Undeploy/Sync call may take before the adapter counts as unreachable.
    cp_adapter_timeout: float = 5.0

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, defaulting to ``<data_dir>/control-plane.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'control-plane.db').resolve()}"

    @property
    def users(self) -> dict[str, str]:
        """User name -> password for HTTP Basic auth."""
        return parse_users(self.cp_users)
