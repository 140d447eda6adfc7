"""Enforcer settings: ``WSGATE_ENFORCER_*`` plus the label and xDS address shared with routers."""

from __future__ import annotations

from pathlib import Path

from wsgate_common.resources import DEFAULT_LABEL
from wsgate_common.settings import CommonSettings


class EnforcerSettings(CommonSettings):
    enforcer_host: str = "0.0.0.0"
    enforcer_grpc_port: int = 8081
    enforcer_http_port: int = 8082
    # "user:password,..." allowed to get test keys with HTTP Basic auth.
    enforcer_users: str = "admin:admin"
    # Optional YAML/JSON file of extra trusted issuers (see enforcer.issuers).
    enforcer_issuers_file: Path | None = None
    label: str = DEFAULT_LABEL
    xds_address: str = "localhost:18000"

    @property
    def enforcer_dir(self) -> Path:
        return self.data_dir / "enforcer"

    @property
    def testkey_path(self) -> Path:
        return self.enforcer_dir / "testkey.pem"
