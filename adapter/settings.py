"""The adapter's settings: ``WSGATE_ADAPTER_*`` environment variables, overridden by flags."""

from __future__ import annotations

from pathlib import Path

from wsgate_common.documents import Budget
from wsgate_common.settings import CommonSettings


class AdapterSettings(CommonSettings):
    adapter_host: str = "0.0.0.0"
    adapter_rest_port: int = 9843
    adapter_xds_port: int = 18000
    adapter_deploy_port: int = 18001
    adapter_users: str = "admin:admin"
    #: Budget for each YAML/JSON file of a deployed project: values, and seconds per file.
    adapter_document_max_nodes: int = 100_000
    adapter_document_timeout: float = 5.0

    @property
    def document_budget(self) -> Budget:
        return Budget(
            max_nodes=self.adapter_document_max_nodes,
            max_seconds=self.adapter_document_timeout,
        )

    @property
    def adapter_dir(self) -> Path:
        """Where the adapter keeps its token key and the CLI-deployed APIs."""
        return self.data_dir / "adapter"

    @property
    def apis_dir(self) -> Path:
        return self.adapter_dir / "apis"
