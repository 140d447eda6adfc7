"""Router settings: ``WSGATE_*`` environment variables, overridden by command-line flags."""

from __future__ import annotations

from wsgate_common.resources import DEFAULT_LABEL
from wsgate_common.settings import CommonSettings


class RouterSettings(CommonSettings):
    router_host: str = "0.0.0.0"
    router_port: int = 9090
    router_tls_port: int = 9095
    label: str = DEFAULT_LABEL
    xds_address: str = "localhost:18000"
    enforcer_address: str = "localhost:8081"
    enforcer_http_url: str = "http://localhost:8082"
    # Limits and timeouts of the data plane.
    router_max_message: int = 1024 * 1024
    router_handshake_timeout: float = 10.0
    router_backend_connect_timeout: float = 10.0
    router_enforcer_timeout: float = 2.0
