"""The adapter's settings: ``WSGATE_ADAPTER_*`` environment variables, overridden by flags."""

from __future__ import annotations

from pathlib import Path

from wsgate_common.settings import CommonSettings


class AdapterSettings(CommonSettings):
    adapter_host: str = "0.0.0.0"
    adapter_rest_port: int = 9843
    adapter_xds_port: int = 18000
    adapter_deploy_port: int = 18001
    adapter_users: str = "admin:admin"

    @property
    def adapter_dir(self) -> Path:
        """Where the adapter keeps its token key and the CLI-deployed APIs."""
        return self.data_dir / "adapter"

    @property
    def apis_dir(self) -> Path:
        return self.adapter_dir / "apis"
