"""ApiDefinition -> the Route and ApiPolicy each gateway label gets. Pure: no I/O, no state.

This is where WSO2 semantics are resolved once, so routers and enforcers never re-derive them:
the context's ``{version}`` (or the version appended when it is absent), topic paths, PUBLISH
winning over SUBSCRIBE on a shared channel, URL mappings joined to endpoint URLs, and the
"Default" label when an API names no deployment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from wsgate_common.resources import COMPRESSION_MODES, DEFAULT_LABEL, DEFAULT_VHOST
from wsgate_proto import config_pb2, definition_pb2

_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~!$&'()+,;=:@%-]+|\{[A-Za-z_][A-Za-z0-9_.-]*\})$")
_VHOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CompileError(ValueError):
    """The definition cannot be served; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class LabelResources:
    """What one gateway label serves for one API."""

    route: config_pb2.Route
    policy: config_pb2.ApiPolicy


def _path_segments(path: str, field: str, allow_params: bool) -> list[str]:
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if segment in (".", ".."):
            raise CompileError(field, f"{path!r} must not contain '.' or '..' segments")
        if not _SEGMENT.match(segment) or (segment.startswith("{") and not allow_params):
            raise CompileError(field, f"{path!r} has an invalid segment {segment!r}")
    return segments


def resolve_base_path(context: str, version: str) -> str:
    """``"echo"``/``"/echo"`` -> ``"/echo/<version>"``; ``"/echo/{version}"`` -> substituted.

    Raises:
        CompileError: empty context, or characters a URL path cannot hold.
    """
    context = context.strip()
    if not context.strip("/"):
        raise CompileError("context", "is empty")
    if "{version}" in context:
        resolved = context.replace("{version}", version)
    else:
        resolved = context.rstrip("/") + "/" + version
    if "{" in resolved or "}" in resolved:
        raise CompileError("context", f"{context!r} has a template other than {{version}}")
    if "?" in resolved or "#" in resolved:
        raise CompileError("context", f"{context!r} must not contain '?' or '#'")
    return "/" + "/".join(_path_segments(resolved, "context", allow_params=False))


def normalize_topic(target: str) -> str:
    """``"notifications"`` -> ``"/notifications"``; ``"*"`` -> ``"/*"``; ``""`` -> ``"/"``.

    Raises:
        CompileError: a segment a URL path cannot hold, or a ``*`` that is not the last segment.
    """
    field = f"operations[{target}]"
    target = target.strip()
    if "?" in target or "#" in target:
        raise CompileError(field, f"topic {target!r} must not contain '?' or '#'")
    segments = [s for s in target.split("/") if s]
    if "*" in segments[:-1]:
        raise CompileError(field, f"topic {target!r}: '*' may only be the last segment")
    _path_segments("/".join(s for s in segments if s != "*"), field, allow_params=True)
    return "/" + "/".join(segments)


def join_url(endpoint: str, mapping: str) -> str:
    """Append a topic's URL mapping to an endpoint URL with exactly one slash between them.

    A query on either side is kept (the endpoint's first); an empty mapping means the endpoint
    URL as-is.
    """
    if not mapping.strip():
        return endpoint
    parts = urlsplit(endpoint)
    map_path, _, map_query = mapping.strip().partition("?")
    path = parts.path.rstrip("/") + "/" + map_path.lstrip("/")
    query = "&".join(q for q in (parts.query, map_query) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _check_endpoint(endpoint: definition_pb2.Endpoint, field: str) -> str:
    url = endpoint.url.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise CompileError(field, f"{url!r} is not a ws:// or wss:// URL")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise CompileError(field, f"{url!r} has an invalid port") from None
    return url


def merge_operations(
    operations: list[definition_pb2.Operation],
) -> dict[str, definition_pb2.Operation]:
    """One operation per topic path; when a channel has both, PUBLISH's settings win.

    Raises:
        CompileError: an unknown verb or a topic path that cannot be served.
    """
    merged: dict[str, definition_pb2.Operation] = {}
    for op in operations:
        verb = op.verb.strip().upper() or "SUBSCRIBE"
        if verb not in ("PUBLISH", "SUBSCRIBE"):
            raise CompileError(f"operations[{op.target}].verb", f"{op.verb!r} is not pub/sub")
        path = normalize_topic(op.target)
        held = merged.get(path)
        if held is None or (verb == "PUBLISH" and held.verb.upper() != "PUBLISH"):
            merged[path] = op
    return merged


SECURITY_SCHEMES = ("oauth2", "api_key")


def security_schemes(api: definition_pb2.ApiDefinition) -> list[str]:
    """The credential kinds the API accepts, from WSO2's ``securityScheme``: "oauth2" and
    "api_key" in the order given, once each; other schemes (``mutualssl``,
    ``oauth_basic_auth_api_key_mandatory``, ...) are not served here and are left out. Empty
    (nothing usable listed) means ["oauth2"], WSO2's default, which the enforcer applies."""
    schemes: list[str] = []
    for raw in api.security_scheme:
        scheme = raw.strip().lower()
        if scheme in SECURITY_SCHEMES and scheme not in schemes:
            schemes.append(scheme)
    return schemes


def cors_policy(api: definition_pb2.ApiDefinition) -> config_pb2.Cors:
    """WSO2's ``corsConfiguration`` as the enforcer's origin policy: origins lower-cased, without
    a trailing slash, once each, in the order given."""
    config = api.cors_configuration
    origins: list[str] = []
    for raw in config.access_control_allow_origins:
        origin = raw.strip().rstrip("/").lower()
        if origin and origin not in origins:
            origins.append(origin)
    return config_pb2.Cors(enabled=config.cors_configuration_enabled, allow_origins=origins)


def compression_mode(api: definition_pb2.ApiDefinition) -> str:
    """The API's permessage-deflate choice for its routes: "passthrough", "strip", or "" (the
    router's WSGATE_ROUTER_COMPRESSION decides).

    Raises:
        CompileError: any other value.
    """
    mode = api.compression.strip().lower()
    if mode and mode not in COMPRESSION_MODES:
        raise CompileError("compression", f"{api.compression[:64]!r} is not passthrough or strip")
    return mode


def _labels(api: definition_pb2.ApiDefinition) -> dict[str, str]:
    deployments = list(api.deployments) or [definition_pb2.Deployment(name=DEFAULT_LABEL)]
    labels: dict[str, str] = {}
    for i, deployment in enumerate(deployments):
        label = deployment.name.strip()
        vhost = deployment.vhost.strip().lower() or DEFAULT_VHOST
        if not _LABEL.match(label):
            raise CompileError(f"deployments[{i}].name", f"{label!r} is not a valid label")
        if not _VHOST.match(vhost):
            raise CompileError(f"deployments[{i}].vhost", f"{vhost!r} is not a host name")
        if labels.get(label, vhost) != vhost:
            raise CompileError(f"deployments[{i}]", f"label {label!r} is listed twice")
        labels[label] = vhost
    return labels


def compile_api(api: definition_pb2.ApiDefinition) -> dict[str, LabelResources]:
    """Resolve one API into the resources of every label it is deployed on.

    Raises:
        CompileError: naming the field that makes the definition unservable.
    """
    if not api.id.strip():
        raise CompileError("id", "is empty")
    if not api.name.strip():
        raise CompileError("name", "is empty")
    version = api.version.strip()
    if not version or "/" in version or not _SEGMENT.match(version):
        raise CompileError("version", f"{api.version!r} is not a valid version")
    if api.api_type and api.api_type.upper() not in ("WS", "WEBSOCKET"):
        raise CompileError("api_type", f"{api.api_type!r} is not a WebSocket API")
    base_path = resolve_base_path(api.context, version)
    production = _check_endpoint(api.production_endpoint, "production_endpoint.url")
    sandbox = _check_endpoint(api.sandbox_endpoint, "sandbox_endpoint.url")
    if not production and not sandbox:
        raise CompileError("endpoints", "the API has neither a production nor a sandbox endpoint")

    compression = compression_mode(api)
    merged = merge_operations(list(api.operations)) or {
        "/*": definition_pb2.Operation(target="/*", verb="SUBSCRIBE")
    }
    route_topics = []
    policy_topics = []
    for path in sorted(merged):
        op = merged[path]
        route_topics.append(
            config_pb2.RouteTopic(
                path=path,
                production_url=join_url(production, op.uri_mapping) if production else "",
                sandbox_url=join_url(sandbox, op.uri_mapping) if sandbox else "",
                production_ca_pem=api.production_endpoint.ca_cert_pem if production else "",
                sandbox_ca_pem=api.sandbox_endpoint.ca_cert_pem if sandbox else "",
            )
        )
        policy_topics.append(
            config_pb2.TopicPolicy(
                path=path,
                secured=op.auth_type.strip().lower() != "none",
                scopes=sorted(set(op.scopes)),
                throttling_policy=op.throttling_policy,
            )
        )

    compiled: dict[str, LabelResources] = {}
    for label, vhost in _labels(api).items():
        route = config_pb2.Route(
            api_id=api.id,
            api_name=api.name,
            api_version=version,
            vhost=vhost,
            base_path=base_path,
            topics=route_topics,
            compression=compression,
        )
        policy = config_pb2.ApiPolicy(
            api_id=api.id,
            api_name=api.name,
            api_version=version,
            vhost=vhost,
            base_path=base_path,
            lifecycle_status=api.lifecycle_status.upper() or "PUBLISHED",
            topics=policy_topics,
            tiers=list(api.policies),
            api_throttling_policy=api.api_throttling_policy,
            has_production_endpoint=bool(production),
            has_sandbox_endpoint=bool(sandbox),
            provider=api.provider,
            security_schemes=security_schemes(api),
            cors=cors_policy(api),
            source=api.source,
        )
        compiled[label] = LabelResources(route, policy)
    return compiled
