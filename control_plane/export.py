"""An API -> WSO2 API project zip (``api.yaml``, ``Definitions/asyncapi.yaml``,
``deployment_environments.yaml`` in one top-level folder), the format ``apictl`` and the
adapter's ``wsgate mg deploy api`` read. Pure: the API's JSON in, zip bytes out."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from typing import Any

import yaml

from control_plane.schemas import ApiBody

PROJECT_VERSION = "v4.2.0"
_PARAMETER = re.compile(r"\{([A-Za-z0-9_]+)\}")


def api_yaml(body: ApiBody, api_id: str, lifecycle_status: str) -> dict[str, Any]:
    document = body.document()
    endpoint_config = document.get("endpointConfig") or {"endpoint_type": "ws"}
    data = {
        "id": api_id,
        "name": body.name,
        "description": body.description or "",
        "context": body.context,
        "version": body.version,
        "provider": body.provider or "admin",
        "lifeCycleStatus": lifecycle_status,
        "type": "WS",
        "transport": ["ws", "wss"],
        "policies": list(body.policies),
        "apiThrottlingPolicy": body.api_throttling_policy,
        "authorizationHeader": "Authorization",
        "securityScheme": list(body.security_scheme),
        "corsConfiguration": document["corsConfiguration"],
        # WSO2 4.x writes both shapes: the list and the same entries keyed by name.
        "additionalProperties": document["additionalProperties"],
        # (copies: a shared object would be dumped as a YAML alias, which readers refuse)
        "additionalPropertiesMap": {
            prop["name"]: dict(prop) for prop in document["additionalProperties"]
        },
        "visibility": "PUBLIC",
        "gatewayType": "wso2/choreo-connect",
        "endpointConfig": {k: v for k, v in endpoint_config.items() if v is not None},
        "scopes": [
            {
                "scope": {
                    "name": item.scope.name,
                    "displayName": item.scope.display_name or item.scope.name,
                    "description": item.scope.description,
                    "bindings": list(item.scope.bindings),
                },
                "shared": item.shared,
            }
            for item in body.scopes
        ],
        "operations": [
            {
                "target": op.target,
                "verb": op.verb,
                "authType": op.auth_type,
                "throttlingPolicy": op.throttling_policy,
                "scopes": list(op.scopes),
                **({"uriMapping": op.uri_mapping} if op.uri_mapping else {}),
            }
            for op in body.operations
        ],
    }
    return {"type": "api", "version": PROJECT_VERSION, "data": data}


def asyncapi_yaml(body: ApiBody) -> dict[str, Any]:
    channels: dict[str, dict[str, Any]] = {}
    for op in body.operations:
        channel = channels.setdefault(op.target, {})
        parameters = _PARAMETER.findall(op.target)
        if parameters:
            channel["parameters"] = {name: {"schema": {"type": "string"}} for name in parameters}
        operation: dict[str, Any] = {
            "x-auth-type": op.auth_type,
            "x-throttling-tier": op.throttling_policy,
            "x-scopes": list(op.scopes),
        }
        if op.uri_mapping:
            operation["x-uri-mapping"] = op.uri_mapping
        channel[op.verb.lower()] = operation
    document: dict[str, Any] = {
        "asyncapi": "2.0.0",
        "info": {"title": body.name, "version": body.version},
    }
    if body.description:
        document["info"]["description"] = body.description
    servers = {}
    endpoints = body.endpoint_config
    for name, endpoint in (
        ("production", endpoints.production_endpoints if endpoints else None),
        ("sandbox", endpoints.sandbox_endpoints if endpoints else None),
    ):
        if endpoint is not None:
            servers[name] = {"url": endpoint.url, "protocol": endpoint.url.split(":", 1)[0]}
    if servers:
        document["servers"] = servers
    document["channels"] = channels
    if body.scopes:
        document["components"] = {
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "implicit": {
                            "authorizationUrl": "https://localhost:9443/oauth2/authorize",
                            "scopes": {s.scope.name: s.scope.description for s in body.scopes},
                            "x-scopes-bindings": {
                                s.scope.name: ",".join(s.scope.bindings) for s in body.scopes
                            },
                        }
                    },
                }
            }
        }
    return document


def environments_yaml(deployments: Iterable[tuple[str, str, bool]]) -> dict[str, Any]:
    return {
        "type": "deployment_environments",
        "version": PROJECT_VERSION,
        "data": [
            {
                "displayOnDevportal": shown,
                "deploymentEnvironment": name,
                "deploymentVhost": vhost,
            }
            for name, vhost, shown in sorted(deployments)
        ],
    }


def _dump(document: dict[str, Any]) -> bytes:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()


def project_zip(
    snapshot: dict[str, Any],
    *,
    api_id: str,
    lifecycle_status: str,
    deployments: Iterable[tuple[str, str, bool]] = (),
) -> tuple[str, bytes]:
    """(file name, zip bytes) of the API project for one API (or revision) snapshot.

    Raises:
        pydantic.ValidationError: the snapshot is not a valid API (a corrupted row).
    """
    body = ApiBody.model_validate(snapshot)
    folder = f"{body.name}-{body.version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder}/api.yaml", _dump(api_yaml(body, api_id, lifecycle_status)))
        archive.writestr(f"{folder}/Definitions/asyncapi.yaml", _dump(asyncapi_yaml(body)))
        archive.writestr(
            f"{folder}/deployment_environments.yaml", _dump(environments_yaml(deployments))
        )
    return f"{folder}.zip", buffer.getvalue()
