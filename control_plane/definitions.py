"""Revision snapshot (WSO2 publisher JSON) -> ``ApiDefinition``, the adapter's input.

Pure functions: no database, no network, so they are tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from control_plane.schemas import ApiBody, EndpointUrl
from wsgate_proto import definition_pb2

SOURCE = "control-plane"


def _endpoint(value: EndpointUrl | None) -> definition_pb2.Endpoint | None:
    return definition_pb2.Endpoint(url=value.url) if value is not None else None


def to_api_definition(
    api_id: str,
    snapshot: Mapping[str, Any],
    *,
    lifecycle_status: str,
    deployments: Iterable[tuple[str, str]],
    revision_id: str,
) -> definition_pb2.ApiDefinition:
    """Build what the adapter compiles from one deployed revision.

    Args:
        api_id: the API's UUID (stable across revisions, so a new revision replaces the old).
        snapshot: the revision's stored definition.
        lifecycle_status: the API's state now (a revision keeps the state it was taken in,
            but a Block or Deprecate applies to what is already deployed).
        deployments: ``(environment, vhost)`` pairs this revision runs on.
        revision_id: the revision's UUID.

    Raises:
        pydantic.ValidationError: the snapshot is not a valid API (a corrupted row).
    """
    body = ApiBody.model_validate(dict(snapshot))
    endpoints = body.endpoint_config
    result = definition_pb2.ApiDefinition(
        id=api_id,
        name=body.name,
        version=body.version,
        context=body.context,
        api_type=body.type,
        provider=body.provider or "",
        lifecycle_status=lifecycle_status,
        production_endpoint=_endpoint(endpoints.production_endpoints) if endpoints else None,
        sandbox_endpoint=_endpoint(endpoints.sandbox_endpoints) if endpoints else None,
        operations=[
            definition_pb2.Operation(
                target=op.target,
                verb=op.verb,
                scopes=op.scopes,
                uri_mapping=op.uri_mapping or "",
                auth_type=op.auth_type,
                throttling_policy=op.throttling_policy,
            )
            for op in body.operations
        ],
        scopes=[
            definition_pb2.Scope(
                name=item.scope.name,
                display_name=item.scope.display_name,
                description=item.scope.description,
                bindings=item.scope.bindings,
            )
            for item in body.scopes
        ],
        policies=body.policies,
        api_throttling_policy=body.api_throttling_policy or "",
        deployments=[
            definition_pb2.Deployment(name=name, vhost=vhost) for name, vhost in sorted(deployments)
        ],
        revision_id=revision_id,
        source=SOURCE,
        security_scheme=body.security_scheme,
        cors_configuration=definition_pb2.CorsConfiguration(
            cors_configuration_enabled=body.cors_configuration.cors_configuration_enabled,
            access_control_allow_origins=body.cors_configuration.access_control_allow_origins,
        ),
        compression=body.compression(),
    )
    return result
