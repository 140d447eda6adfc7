"""An AsyncAPI 2.x document (+ WSO2's ``additionalProperties``) -> publisher API JSON.

Pure: text in, a dict for ``schemas.ApiBody`` out. Channels become topics (operations) with
their ``x-scopes``, ``x-uri-mapping``, ``x-auth-type`` and ``x-throttling-tier``; scopes come
from the oauth2 security scheme with ``x-scopes-bindings``. When a channel has both, the
PUBLISH operation's settings win for what the topic shares (its URL mapping).
"""

from __future__ import annotations

import json
from typing import Any

from wsgate_common.documents import DEFAULT_BUDGET, Budget, DocumentError, clip, load

VERBS = {"publish": "PUBLISH", "subscribe": "SUBSCRIBE"}


class AsyncApiError(ValueError):
    """The document (or additionalProperties) is not usable; names the field."""

    def __init__(self, field: str, message: str) -> None:
        if len(field) > 120:  # a field path holds document keys: never echo a long one
            field = field[:120] + "..."
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[AsyncApiError], tuple[str, str]]:
        # raised in a document worker process (load_in_worker): rebuilt from its parts
        return (type(self), (self.field, self.message))


def load_document(
    content: bytes, field: str = "file", budget: Budget = DEFAULT_BUDGET
) -> dict[str, Any]:
    """YAML or JSON (JSON is YAML too) bytes -> mapping, within ``budget`` (no aliases).

    Raises:
        AsyncApiError: not UTF-8, not parseable, or not a mapping.
        DocumentError: over budget (``too_large``).
    """
    try:
        doc = load(content, budget)
    except DocumentError as exc:
        if exc.too_large:
            raise
        raise AsyncApiError(field, exc.message) from None
    if not isinstance(doc, dict):
        raise AsyncApiError(field, "must be a YAML or JSON mapping")
    return doc


def load_properties(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AsyncApiError("additionalProperties", f"is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise AsyncApiError("additionalProperties", "must be a JSON object")
    return value


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AsyncApiError(field, "must be a mapping")
    return value


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AsyncApiError(field, "must be a list of strings")
    return list(value)


def _scopes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    components = _mapping(doc.get("components"), "components")
    schemes = _mapping(components.get("securitySchemes"), "components.securitySchemes")
    found: dict[str, dict[str, Any]] = {}
    for name, raw in schemes.items():
        scheme = _mapping(raw, f"components.securitySchemes.{name}")
        if scheme.get("type") != "oauth2":
            continue
        flows = _mapping(scheme.get("flows"), f"components.securitySchemes.{name}.flows")
        for flow_name, raw_flow in flows.items():
            field = f"components.securitySchemes.{name}.flows.{flow_name}"
            flow = _mapping(raw_flow, field)
            bindings = _mapping(flow.get("x-scopes-bindings"), f"{field}.x-scopes-bindings")
            for scope, description in _mapping(flow.get("scopes"), f"{field}.scopes").items():
                found[str(scope)] = {
                    "scope": {
                        "name": str(scope),
                        "displayName": str(scope),
                        "description": str(description or ""),
                        "bindings": _strings(
                            bindings.get(scope), f"{field}.x-scopes-bindings.{scope}"
                        ),
                    },
                    "shared": False,
                }
    return list(found.values())


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    channels = _mapping(doc.get("channels"), "channels")
    operations: list[dict[str, Any]] = []
    for target, raw in channels.items():
        channel = _mapping(raw, f"channels.{target}")
        found = {}
        for key, verb in VERBS.items():
            if key not in channel:
                continue
            field = f"channels.{target}.{key}"
            op = _mapping(channel[key], field)
            entry: dict[str, Any] = {
                "target": str(target),
                "verb": verb,
                "scopes": _strings(op.get("x-scopes"), f"{field}.x-scopes"),
                "authType": str(op.get("x-auth-type") or "Any"),
            }
            if op.get("x-uri-mapping"):
                entry["uriMapping"] = str(op["x-uri-mapping"])
            if op.get("x-throttling-tier"):
                entry["throttlingPolicy"] = str(op["x-throttling-tier"])
            found[verb] = entry
        shared = found.get("PUBLISH", {}).get("uriMapping") or found.get("SUBSCRIBE", {}).get(
            "uriMapping"
        )
        for entry in found.values():
            if shared:
                entry["uriMapping"] = shared
            operations.append(entry)
    return operations


def _server_url(doc: dict[str, Any], name: str) -> str | None:
    servers = _mapping(doc.get("servers"), "servers")
    if name not in servers:
        return None
    server = _mapping(servers[name], f"servers.{name}")
    url = str(server.get("url") or "")
    if url and "://" not in url:
        url = f"{server.get('protocol') or 'ws'}://{url}"
    return url or None


def to_api_body(doc: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """The publisher JSON for an imported API; ``properties`` (name, context, version, ...)
    override what the document says.

    Raises:
        AsyncApiError: not AsyncAPI 2.x, or a part of the wrong shape.
    """
    version = str(doc.get("asyncapi", ""))
    if not version.startswith("2."):
        raise AsyncApiError("file", f"asyncapi version {clip(version or 'missing')} is not 2.x")
    info = _mapping(doc.get("info"), "info")
    operations = _operations(doc)
    scopes = _scopes(doc)
    declared = {item["scope"]["name"] for item in scopes}
    for op in operations:
        for scope in op["scopes"]:
            if scope not in declared:
                declared.add(scope)
                scopes.append({"scope": {"name": scope, "bindings": []}, "shared": False})
    body: dict[str, Any] = {
        "name": info.get("title"),
        "version": info.get("version"),
        "description": info.get("description"),
        "type": "WS",
        "operations": operations or None,
        "scopes": scopes,
    }
    endpoints: dict[str, Any] = {"endpoint_type": "ws"}
    for server, key in (("production", "production_endpoints"), ("sandbox", "sandbox_endpoints")):
        url = _server_url(doc, server)
        if url:
            endpoints[key] = {"url": url}
    if len(endpoints) > 1:
        body["endpointConfig"] = endpoints
    for key, value in properties.items():
        if key not in ("id", "lifeCycleStatus", "createdTime", "lastUpdatedTime"):
            body[key] = value
    return {key: value for key, value in body.items() if value is not None}
