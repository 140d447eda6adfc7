"""xDS type URLs of wsgate's own resources (messages in proto/wsgate_proto/config.proto)."""

from __future__ import annotations

TYPE_PREFIX = "type.googleapis.com/"
ROUTE_TYPE_URL = TYPE_PREFIX + "wsgate.config.v1.Route"
API_POLICY_TYPE_URL = TYPE_PREFIX + "wsgate.config.v1.ApiPolicy"

DEFAULT_LABEL = "Default"
DEFAULT_VHOST = "localhost"
