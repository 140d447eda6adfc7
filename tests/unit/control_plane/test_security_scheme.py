"""An API's securityScheme and corsConfiguration (WSO2 names): validated, stored, returned,
kept in revisions, pushed in the ApiDefinition, exported in api.yaml and imported."""

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
from control_plane.schemas import MAX_CORS_ORIGINS, ApiBody
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

CORS = {
    "corsConfigurationEnabled": True,
    "accessControlAllowOrigins": ["https://App.example.com/", "http://localhost:3000", "*"],
    "accessControlAllowCredentials": True,
    "accessControlAllowHeaders": ["authorization", "apikey"],
    "accessControlAllowMethods": ["get", "POST"],
}
STORED_CORS = {
    **CORS,
    "accessControlAllowOrigins": ["https://app.example.com", "http://localhost:3000", "*"],
    "accessControlAllowMethods": ["GET", "POST"],
}


def test_defaults_are_wso2s(client: TestClient) -> None:
    api = create_api(client)
    assert api["securityScheme"] == ["oauth2"]
    assert api["corsConfiguration"]["corsConfigurationEnabled"] is False
    assert api["corsConfiguration"]["accessControlAllowOrigins"] == ["*"]
    null = create_api(
        client, name="Nulls", context="/nulls", securityScheme=None, corsConfiguration=None
    )
    assert null["securityScheme"] == ["oauth2"]
    assert null["corsConfiguration"] == api["corsConfiguration"]


def test_stored_returned_and_updated(client: TestClient) -> None:
    api = create_api(
        client, securityScheme=["api_key", "mutualssl", "api_key"], corsConfiguration=CORS
    )
    assert api["securityScheme"] == ["api_key", "mutualssl"]
    assert api["corsConfiguration"] == STORED_CORS
    fetched = client.get(f"{BASE}/apis/{api['id']}").json()
    assert (fetched["securityScheme"], fetched["corsConfiguration"]) == (
        ["api_key", "mutualssl"],
        STORED_CORS,
    )
    both = api_body(securityScheme=["oauth2", "api_key"], corsConfiguration=CORS)
    updated = client.put(f"{BASE}/apis/{api['id']}", json=both)
    assert updated.status_code == 200, updated.text
    assert client.get(f"{BASE}/apis/{api['id']}").json()["securityScheme"] == ["oauth2", "api_key"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"securityScheme": []}, 'securityScheme: must include "oauth2" or "api_key"'),
        ({"securityScheme": ["mutualssl"]}, 'securityScheme: must include "oauth2" or "api_key"'),
        ({"securityScheme": ["oauth2", "bad scheme"]}, "securityScheme: 'bad scheme' is not"),
        ({"securityScheme": ["oauth2"] * 17}, "securityScheme: at most 16 entries"),
        ({"securityScheme": "oauth2"}, "securityScheme"),
        (
            {"corsConfiguration": {"accessControlAllowOrigins": ["https://a.example/path"]}},
            "corsConfiguration.accessControlAllowOrigins: origin 'https://a.example/path' must",
        ),
        (
            {"corsConfiguration": {"accessControlAllowOrigins": ["a.example"]}},
            "corsConfiguration.accessControlAllowOrigins: origin 'a.example' is not",
        ),
        (
            {"corsConfiguration": {"accessControlAllowOrigins": ["https://*.a.example"]}},
            "corsConfiguration.accessControlAllowOrigins: origin 'https://*.a.example' has",
        ),
        (
            {"corsConfiguration": {"accessControlAllowOrigins": ["https://a.example:99999"]}},
            "invalid port",
        ),
        (
            {
                "corsConfiguration": {
                    "accessControlAllowOrigins": [
                        f"https://h{n}.example" for n in range(MAX_CORS_ORIGINS + 1)
                    ]
                }
            },
            f"corsConfiguration.accessControlAllowOrigins: at most {MAX_CORS_ORIGINS} origins"
            f" (got {MAX_CORS_ORIGINS + 1})",
        ),
        (
            {"corsConfiguration": {"accessControlAllowOrigins": ["https://" + "a" * 250 + ".io"]}},
            "origin longer than 255 characters",
        ),
        (
            {"corsConfiguration": {"accessControlAllowHeaders": ["x y"]}},
            "corsConfiguration.accessControlAllowHeaders",
        ),
        (
            {"corsConfiguration": {"accessControlAllowMethods": ["GET"] * 51}},
            "corsConfiguration.accessControlAllowMethods: at most 50 methods",
        ),
        ({"corsConfiguration": {"corsConfigurationEnabled": "maybe"}}, "corsConfigurationEnabled"),
    ],
)
def test_bad_values_are_400_naming_the_field(
    client: TestClient, changes: dict[str, Any], message: str
) -> None:
    answer = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["description"]
    assert client.get(f"{BASE}/apis").json()["count"] == 0


def test_revisions_keep_what_was_deployed_and_the_adapter_gets_it(
    adapter_client: tuple[TestClient, FakeAdapter],
) -> None:
    client, adapter = adapter_client
    api_id = published_api(client, securityScheme=["api_key"], corsConfiguration=CORS)
    revision = create_revision(client, api_id)["id"]
    # the working copy changes after the revision was taken
    changed = api_body(policies=["AsyncGold", "AsyncBronze"], securityScheme=["oauth2"])
    assert client.put(f"{BASE}/apis/{api_id}", json=changed).status_code == 200
    assert deploy(client, api_id, revision, "Default").status_code == 201
    wait_until(lambda: bool(adapter.deployed))
    definition = adapter.deployed[-1]
    assert list(definition.security_scheme) == ["api_key"]
    assert definition.cors_configuration.cors_configuration_enabled is True
    assert list(definition.cors_configuration.access_control_allow_origins) == [
        "https://app.example.com",
        "http://localhost:3000",
        "*",
    ]
    restored = client.post(
        f"{BASE}/apis/{api_id}/restore-revision", params={"revisionId": revision}
    )
    assert restored.json()["securityScheme"] == ["api_key"]


def test_definitions_stored_before_the_fields_existed_read_as_defaults(client: TestClient) -> None:
    api_id = create_api(client)["id"]
    factory = client.app.state.sessionmaker  # type: ignore[attr-defined]
    with factory() as session:
        api = session.get(Api, uuid.UUID(api_id))
        assert api is not None
        old = dict(api.definition)
        del old["securityScheme"], old["corsConfiguration"]
        api.definition = old
        session.commit()
        result = to_api_definition(
            api_id, old, lifecycle_status="CREATED", deployments=[], revision_id="r"
        )
    assert list(result.security_scheme) == ["oauth2"]
    assert result.cors_configuration.cors_configuration_enabled is False
    assert list(result.cors_configuration.access_control_allow_origins) == ["*"]
    assert client.get(f"{BASE}/apis/{api_id}").json()["securityScheme"] == ["oauth2"]


def test_definition_carries_both() -> None:
    body = ApiBody.model_validate(
        api_body(securityScheme=["oauth2", "api_key"], corsConfiguration=CORS)
    )
    result = to_api_definition(
        "id-1", body.document(), lifecycle_status="PUBLISHED", deployments=[], revision_id="r"
    )
    assert list(result.security_scheme) == ["oauth2", "api_key"]
    assert result.cors_configuration.access_control_allow_origins[0] == "https://app.example.com"


def test_export_writes_them_into_api_yaml(client: TestClient) -> None:
    api_id = published_api(client, securityScheme=["oauth2", "api_key"], corsConfiguration=CORS)
    answer = client.get(f"{BASE}/apis/export", params={"apiId": api_id})
    assert answer.status_code == 200, answer.text
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    data = yaml.safe_load(archive.read("Echo-1.0/api.yaml"))["data"]
    assert data["securityScheme"] == ["oauth2", "api_key"]
    assert data["corsConfiguration"] == STORED_CORS
    default = published_api(client, name="Plain", context="/plain")
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"{BASE}/apis/export", params={"apiId": default}).content)
    )
    data = yaml.safe_load(archive.read("Plain-1.0/api.yaml"))["data"]
    assert data["securityScheme"] == ["oauth2"]
    assert data["corsConfiguration"]["corsConfigurationEnabled"] is False


ASYNCAPI = """
asyncapi: 2.0.0
info: {title: Feed, version: '1.0'}
channels:
  /feed: {subscribe: {}}
"""


def test_import_asyncapi_accepts_them_in_additional_properties(client: TestClient) -> None:
    properties = {"context": "/feed", "securityScheme": ["api_key"], "corsConfiguration": CORS}
    answer = client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", ASYNCAPI.encode(), "application/yaml")},
        data={"additionalProperties": json.dumps(properties)},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["securityScheme"] == ["api_key"]
    assert answer.json()["corsConfiguration"] == STORED_CORS
    properties = {"context": "/feed2", "name": "Feed2", "securityScheme": ["basic_auth"]}
    refused = client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", ASYNCAPI.encode(), "application/yaml")},
        data={"additionalProperties": json.dumps(properties)},
    )
    assert refused.status_code == 400
    assert "securityScheme" in refused.json()["description"]


def test_the_adapter_reads_them_back_from_the_exported_project(client: TestClient) -> None:
    """What ``wsgate mg deploy api -f <export>.zip`` hands the adapter carries both."""
    from adapter.project import load_zip

    api_id = published_api(client, securityScheme=["api_key", "oauth2"], corsConfiguration=CORS)
    exported = client.get(f"{BASE}/apis/export", params={"apiId": api_id}).content
    definition = load_zip(exported, "Echo-1.0.zip")
    assert list(definition.security_scheme) == ["api_key", "oauth2"]
    assert definition.cors_configuration.cors_configuration_enabled is True
    assert list(definition.cors_configuration.access_control_allow_origins) == [
        "https://app.example.com",
        "http://localhost:3000",
        "*",
    ]
    assert definition.source == "adapter"
