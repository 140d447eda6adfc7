"""Revision snapshot -> ApiDefinition, the pure conversion the adapter receives."""

from __future__ import annotations

import pydantic
import pytest

from control_plane.definitions import to_api_definition
from control_plane.schemas import ApiBody
from tests.unit.control_plane.helpers import api_body


def snapshot() -> dict[str, object]:
    return ApiBody.model_validate(api_body(provider="alice")).document()


def test_fields_are_carried_over() -> None:
    result = to_api_definition(
        "0b0e4f7a-5d7e-4e53-9c55-4ab1b0e0c0de",
        snapshot(),
        lifecycle_status="PUBLISHED",
        deployments=[("Default", "localhost")],
        revision_id="rev-1",
    )
    assert result.id == "0b0e4f7a-5d7e-4e53-9c55-4ab1b0e0c0de"
    assert (result.name, result.version, result.context) == ("Echo", "1.0", "/echo")
    assert result.api_type == "WS"
    assert result.provider == "alice"
    assert result.lifecycle_status == "PUBLISHED"
    assert result.source == "control-plane"
    assert result.revision_id == "rev-1"
    assert result.production_endpoint.url == "ws://localhost:8765"
    assert result.sandbox_endpoint.url == "wss://sandbox.example:8443/echo"
    assert [(op.target, op.verb) for op in result.operations] == [
        ("/notifications", "SUBSCRIBE"),
        ("/rooms/{room}", "PUBLISH"),
    ]
    assert list(result.operations[0].scopes) == ["read"]
    assert result.operations[1].uri_mapping == "/r/{room}"
    assert result.operations[1].auth_type == "Any"
    assert result.operations[1].throttling_policy == "Unlimited"
    [scope] = result.scopes
    assert (scope.name, scope.display_name, list(scope.bindings)) == ("read", "Read", ["user"])
    assert list(result.policies) == ["AsyncGold"]
    assert result.api_throttling_policy == "Unlimited"


def test_deployments_are_sorted_and_lifecycle_is_the_current_one() -> None:
    result = to_api_definition(
        "id",
        snapshot(),
        lifecycle_status="BLOCKED",
        deployments=[("Edge", "edge.example"), ("Default", "localhost")],
        revision_id="rev-2",
    )
    assert [(d.name, d.vhost) for d in result.deployments] == [
        ("Default", "localhost"),
        ("Edge", "edge.example"),
    ]
    assert result.lifecycle_status == "BLOCKED"


def test_missing_endpoints_stay_unset() -> None:
    doc = snapshot()
    doc["endpointConfig"] = None
    result = to_api_definition(
        "id", doc, lifecycle_status="CREATED", deployments=[], revision_id="r"
    )
    assert not result.HasField("production_endpoint")
    assert not result.HasField("sandbox_endpoint")
    assert list(result.deployments) == []


def test_corrupt_snapshot_raises() -> None:
    with pytest.raises(pydantic.ValidationError):
        to_api_definition(
            "id", {"name": "x"}, lifecycle_status="CREATED", deployments=[], revision_id="r"
        )
