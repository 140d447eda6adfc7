"""xDS type URLs of wsgate's own resources (messages in proto/wsgate_proto/config.proto)."""

from __future__ import annotations

TYPE_PREFIX = "type.googleapis.com/"
ROUTE_TYPE_URL = TYPE_PREFIX + "wsgate.config.v1.Route"
API_POLICY_TYPE_URL = TYPE_PREFIX + "wsgate.config.v1.ApiPolicy"

DEFAULT_LABEL = "Default"
DEFAULT_VHOST = "localhost"

#: The WSO2 API "additional property" that chooses permessage-deflate handling for one API
#: (ApiDefinition.compression -> Route.compression), and the values it may take.
COMPRESSION_PROPERTY = "wsgate.compression"
COMPRESSION_MODES = ("passthrough", "strip")

# Subscription data (proto/wsgate_proto/subscription.proto): the same set on every label,
# one resource per item, served to enforcers.
APPLICATION_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.Application"
SUBSCRIPTION_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.Subscription"
KEY_MAPPING_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.KeyMapping"
THROTTLE_POLICY_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.ThrottlePolicy"
KEY_MANAGER_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.KeyManager"
REVOKED_TOKEN_TYPE_URL = TYPE_PREFIX + "wsgate.subscription.v1.RevokedToken"
SUBSCRIPTION_DATA_TYPE_URLS = (
    APPLICATION_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
)
