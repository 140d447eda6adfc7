"""Enforcer settings: ``WSGATE_ENFORCER_*`` plus the label and xDS address shared with routers."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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
    # Browser origins (the Origin header) allowed to open a connection to an API whose own
    # corsConfiguration is off, comma-separated: exact origins, "*" (any), "https://*.example.com"
    # (any subdomain), "http://localhost:*" (any port). The default admits pages served from
    # this machine only (what `make run` and a local test page need); requests without an
    # Origin header (non-browser clients) are never affected.
    enforcer_allowed_origins: str = ",".join(
        f"{scheme}://{host}:*"
        for scheme in ("http", "https")
        for host in ("localhost", "127.0.0.1", "[::1]")
    )
    # Test keys (POST /testkey) are a development aid: off -> /testkey answers 404 and test
    # keys are not trusted at all.
    testkey_enabled: bool = True
    # The longest validity a test key may be given (seconds); also caps the default (1 hour).
    testkey_max_validity: int = Field(default=3600, ge=1)
    # Accept test keys on APIs the control plane manages (normally only CLI-deployed ones).
    testkey_control_plane_apis: bool = False

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.enforcer_allowed_origins.split(",") if o.strip())

    @property
    def enforcer_dir(self) -> Path:
        return self.data_dir / "enforcer"

    @property
    def testkey_path(self) -> Path:
        return self.enforcer_dir / "testkey.pem"
