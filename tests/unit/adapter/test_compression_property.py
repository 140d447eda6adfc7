"""Issue 10 item 11: an API's ``wsgate.compression`` additional property (WSO2
``additionalProperties`` / ``additionalPropertiesMap`` in api.yaml) is read by the project
parser into ApiDefinition.compression and compiled into every label's Route.compression."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
import yaml

from adapter.compile import CompileError, compile_api
from adapter.project import ProjectError, load_zip
from wsgate_proto import definition_pb2

API: dict[str, Any] = {
    "type": "api",
    "version": "v4.2.0",
    "data": {
        "name": "Squeeze",
        "context": "/squeeze",
        "version": "1.0.0",
        "endpointConfig": {
            "endpoint_type": "ws",
            "production_endpoints": {"url": "ws://backend:9000"},
        },
    },
}


def _project(**data: Any) -> bytes:
    document = {**API, "data": {**API["data"], **data}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Squeeze-1.0.0/api.yaml", yaml.safe_dump(document))
    return buffer.getvalue()


def _prop(name: str, value: object, display: bool = False) -> dict[str, object]:
    return {"name": name, "value": value, "display": display}


def _error(**data: Any) -> ProjectError:
    with pytest.raises(ProjectError) as info:
        load_zip(_project(**data))
    return info.value


def test_unset_means_the_routers_setting() -> None:
    assert load_zip(_project()).compression == ""
    others = load_zip(_project(additionalProperties=[_prop("team", "payments", True)]))
    assert others.compression == ""
    assert compile_api(others)["Default"].route.compression == ""


@pytest.mark.parametrize(
    "data",
    [
        # API-M 4.x: the list of {name, value, display} ...
        {"additionalProperties": [_prop("team", "x"), _prop("wsgate.compression", "strip")]},
        # ... and the same entries keyed by name (both are written by a 4.x export)
        {"additionalPropertiesMap": {"wsgate.compression": _prop("wsgate.compression", "strip")}},
        {
            "additionalProperties": [_prop("wsgate.compression", " STRIP ")],
            "additionalPropertiesMap": {"wsgate.compression": _prop("wsgate.compression", "strip")},
        },
        # API-M 3.x: name -> value
        {"additionalProperties": {"wsgate.compression": "strip", "team": "x"}},
    ],
)
def test_strip_is_read_from_every_wso2_shape(data: dict[str, Any]) -> None:
    assert load_zip(_project(**data)).compression == "strip"


def test_passthrough_is_kept_explicitly() -> None:
    api = load_zip(_project(additionalProperties=[_prop("wsgate.compression", "passthrough")]))
    assert api.compression == "passthrough"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"additionalProperties": [_prop("team", "x"), _prop("wsgate.compression", "gzip")]},
            "data.additionalProperties[1].value",
        ),
        (
            {"additionalProperties": [_prop("wsgate.compression", "")]},
            "data.additionalProperties[0].value",
        ),
        (
            {"additionalPropertiesMap": {"wsgate.compression": {"value": "deflate"}}},
            "data.additionalPropertiesMap.wsgate.compression.value",
        ),
        (
            {"additionalProperties": {"wsgate.compression": "none"}},
            "data.additionalProperties.wsgate.compression",
        ),
    ],
)
def test_an_unknown_value_is_an_error_naming_the_property(data: dict[str, Any], field: str) -> None:
    error = _error(**data)
    assert error.file == "Squeeze-1.0.0/api.yaml"
    assert error.field == field
    assert "wsgate.compression" in error.message
    assert "'passthrough' or 'strip'" in error.message
    assert not error.too_large


def test_the_list_and_the_map_must_agree() -> None:
    error = _error(
        additionalProperties=[_prop("wsgate.compression", "strip")],
        additionalPropertiesMap={"wsgate.compression": _prop("wsgate.compression", "passthrough")},
    )
    assert error.field == "data.additionalPropertiesMap.wsgate.compression.value"
    assert "data.additionalProperties[0].value" in error.message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"additionalProperties": "strip"}, "data.additionalProperties"),
        ({"additionalProperties": ["wsgate.compression"]}, "data.additionalProperties[0]"),
        ({"additionalPropertiesMap": ["x"]}, "data.additionalPropertiesMap"),
        (
            {"additionalProperties": [_prop("wsgate.compression", ["strip"])]},
            "data.additionalProperties[0].value",
        ),
    ],
)
def test_malformed_properties_name_the_field(data: dict[str, Any], field: str) -> None:
    assert _error(**data).field == field


def _definition(compression: str) -> definition_pb2.ApiDefinition:
    return definition_pb2.ApiDefinition(
        id="A:1",
        name="A",
        version="1",
        context="/a",
        api_type="WS",
        production_endpoint=definition_pb2.Endpoint(url="ws://b:1"),
        deployments=[
            definition_pb2.Deployment(name="Default"),
            definition_pb2.Deployment(name="edge", vhost="edge.example"),
        ],
        compression=compression,
    )


@pytest.mark.parametrize(
    ("given", "compiled"),
    [("strip", "strip"), ("passthrough", "passthrough"), ("", ""), (" Strip ", "strip")],
)
def test_compile_copies_it_into_every_labels_route(given: str, compiled: str) -> None:
    resources = compile_api(_definition(given))
    assert {label: r.route.compression for label, r in resources.items()} == {
        "Default": compiled,
        "edge": compiled,
    }


def test_compile_refuses_an_unknown_value() -> None:
    with pytest.raises(CompileError) as info:
        compile_api(_definition("gzip"))
    assert info.value.field == "compression"


def test_a_project_to_route_end_to_end() -> None:
    api = load_zip(_project(additionalProperties=[_prop("wsgate.compression", "strip")]))
    assert compile_api(api)["Default"].route.compression == "strip"
