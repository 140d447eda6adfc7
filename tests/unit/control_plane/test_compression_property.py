"""Issue 10 item 11: an API's ``wsgate.compression`` additional property (WSO2
``additionalProperties``, a list of ``{name, value, display}``) on the publisher API: validated
(400 naming it), stored, returned, kept in revisions, pushed as ApiDefinition.compression,
exported in api.yaml (both WSO2 shapes) and read back by the adapter from the export."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from control_plane.definitions import to_api_definition
from control_plane.models import Api
from control_plane.schemas import MAX_ADDITIONAL_PROPERTIES, ApiBody
from tests.unit.control_plane.helpers import (
    BASE,
    FakeAdapter,
    api_body,
    create_api,
    create_revision,
    deploy,
    published_api,
)
from tests.unit.control_plane.test_push import wait_until

STRIP = [
    {"name": "team", "value": "payments", "display": True},
    {"name": "wsgate.compression", "value": " Strip ", "display": False},
]
STORED_STRIP = [
    {"name": "team", "value": "payments", "display": True},
    {"name": "wsgate.compression", "value": "strip", "display": False},
]


def _definition(document: dict[str, Any]) -> str:
    result = to_api_definition(
        "id-1", document, lifecycle_status="PUBLISHED", deployments=[], revision_id="r"
    )
    return result.compression


def test_schema_reads_the_property() -> None:
    assert ApiBody.model_validate(api_body()).compression() == ""
    assert ApiBody.model_validate(api_body(additionalProperties=None)).additional_properties == []
    body = ApiBody.model_validate(api_body(additionalProperties=STRIP))
    assert body.compression() == "strip"
    assert body.document()["additionalProperties"] == STORED_STRIP
    passthrough = [{"name": "wsgate.compression", "value": "passthrough"}]
    assert ApiBody.model_validate(api_body(additionalProperties=passthrough)).compression() == (
        "passthrough"
    )


def test_definition_carries_it() -> None:
    assert _definition(ApiBody.model_validate(api_body(additionalProperties=STRIP)).document()) == (
        "strip"
    )
    assert _definition(ApiBody.model_validate(api_body()).document()) == ""
    stored_before = ApiBody.model_validate(api_body()).document()
    del stored_before["additionalProperties"]  # a definition saved before the field existed
    assert _definition(stored_before) == ""


def test_stored_returned_and_updated(client: TestClient) -> None:
    api = create_api(client, additionalProperties=STRIP)
    assert api["additionalProperties"] == STORED_STRIP
    assert client.get(f"{BASE}/apis/{api['id']}").json()["additionalProperties"] == STORED_STRIP
    off = [{"name": "wsgate.compression", "value": "passthrough", "display": False}]
    updated = client.put(f"{BASE}/apis/{api['id']}", json=api_body(additionalProperties=off))
    assert updated.status_code == 200, updated.text
    assert client.get(f"{BASE}/apis/{api['id']}").json()["additionalProperties"] == off
    assert create_api(client, name="Plain", context="/plain")["additionalProperties"] == []


def _prop(name: str, value: object) -> dict[str, object]:
    return {"name": name, "value": value}


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (
            [_prop("team", "x"), _prop("wsgate.compression", "gzip")],
            "additionalProperties[1]: wsgate.compression must be 'passthrough' or 'strip'"
            " (got 'gzip')",
        ),
        ([_prop("wsgate.compression", "")], "additionalProperties[0]: wsgate.compression must"),
        (
            [_prop("wsgate.compression", "strip"), _prop("wsgate.compression", "strip")],
            "additionalProperties: [1]: property 'wsgate.compression' is listed twice",
        ),
        ([_prop(" ", "x")], "additionalProperties[0].name"),
        ([_prop("a" * 256, "x")], "additionalProperties[0].name"),
        ([_prop("big", "v" * 1025)], "additionalProperties[0].value"),
        ([_prop("n", 5)], "additionalProperties[0].value"),
        (
            [_prop(f"p{n}", "x") for n in range(MAX_ADDITIONAL_PROPERTIES + 1)],
            "additionalProperties: List should have at most 50 items",
        ),
        ({"wsgate.compression": "strip"}, "additionalProperties"),
    ],
)
def test_bad_properties_are_400_naming_the_field(
    client: TestClient, properties: object, message: str
) -> None:
    answer = client.post(f"{BASE}/apis", json=api_body(additionalProperties=properties))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["description"]
    assert client.get(f"{BASE}/apis").json()["count"] == 0
    api_id = create_api(client)["id"]
    update = client.put(f"{BASE}/apis/{api_id}", json=api_body(additionalProperties=properties))
    assert update.status_code == 400, update.text
    assert client.get(f"{BASE}/apis/{api_id}").json()["additionalProperties"] == []


def test_the_deployed_revision_carries_it_to_the_adapter(
    adapter_client: tuple[TestClient, FakeAdapter],
) -> None:
    client, adapter = adapter_client
    api_id = published_api(client, additionalProperties=STRIP)
    revision = create_revision(client, api_id)["id"]
    # the working copy changes after the revision was taken: the revision's value is deployed
    assert client.put(f"{BASE}/apis/{api_id}", json=api_body()).status_code == 200
    assert deploy(client, api_id, revision, "Default").status_code == 201
    wait_until(lambda: bool(adapter.deployed))
    assert adapter.deployed[-1].compression == "strip"


def test_export_writes_both_wso2_shapes_and_the_adapter_reads_it_back(
    client: TestClient,
) -> None:
    from adapter.project import load_zip

    api_id = published_api(client, additionalProperties=STRIP)
    exported = client.get(f"{BASE}/apis/export", params={"apiId": api_id})
    assert exported.status_code == 200, exported.text
    text = zipfile.ZipFile(io.BytesIO(exported.content)).read("Echo-1.0/api.yaml").decode()
    assert "&id" not in text  # no YAML anchors: the adapter refuses aliases
    data = yaml.safe_load(text)["data"]
    assert data["additionalProperties"] == STORED_STRIP
    assert data["additionalPropertiesMap"] == {p["name"]: p for p in STORED_STRIP}
    assert load_zip(exported.content, "Echo-1.0.zip").compression == "strip"

    plain = published_api(client, name="Plain", context="/plain")
    exported = client.get(f"{BASE}/apis/export", params={"apiId": plain})
    data = yaml.safe_load(zipfile.ZipFile(io.BytesIO(exported.content)).read("Plain-1.0/api.yaml"))
    assert (data["data"]["additionalProperties"], data["data"]["additionalPropertiesMap"]) == (
        [],
        {},
    )
    assert load_zip(exported.content, "Plain-1.0.zip").compression == ""


def test_definitions_stored_before_the_field_existed_still_load(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        api = session.get(Api, uuid.UUID(api_id))
        assert api is not None
        old = dict(api.definition)
        del old["additionalProperties"]
        api.definition = old
        session.commit()
    assert client.get(f"{BASE}/apis/{api_id}").json()["additionalProperties"] == []
    exported = client.get(f"{BASE}/apis/export", params={"apiId": api_id})
    assert exported.status_code == 200, exported.text


ASYNCAPI = """
asyncapi: 2.0.0
info: {title: Feed, version: '1.0'}
channels:
  /feed: {subscribe: {}}
"""


def test_import_asyncapi_takes_it_with_the_other_api_fields(client: TestClient) -> None:
    properties = {"context": "/feed", "additionalProperties": STRIP}
    answer = client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", ASYNCAPI.encode(), "application/yaml")},
        data={"additionalProperties": json.dumps(properties)},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["additionalProperties"] == STORED_STRIP
    properties = {
        "context": "/feed2",
        "name": "Feed2",
        "additionalProperties": [_prop("wsgate.compression", "zstd")],
    }
    refused = client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", ASYNCAPI.encode(), "application/yaml")},
        data={"additionalProperties": json.dumps(properties)},
    )
    assert refused.status_code == 400, refused.text
    assert "wsgate.compression" in refused.json()["description"]
