"""Issue 12: hostile input and hostile tenants against an in-process control plane."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.hostile_docs import big_asyncapi, yaml_bomb
from tests.unit.control_plane.helpers import BASE


def _import(client: TestClient, document: bytes, context: str = "/bomb") -> object:
    return client.post(
        f"{BASE}/apis/import-asyncapi",
        files={"file": ("asyncapi.yaml", document, "application/yaml")},
        data={"additionalProperties": f'{{"context": "{context}"}}'},
    )


def test_yaml_bomb_import_is_a_short_400_and_stores_nothing(client: TestClient) -> None:
    started = time.monotonic()
    answer = _import(client, yaml_bomb())
    assert time.monotonic() - started < 2
    assert answer.status_code == 400, answer.text[:300]  # type: ignore[attr-defined]
    assert len(answer.content) < 400  # type: ignore[attr-defined]
    assert "alias" in answer.json()["description"]  # type: ignore[attr-defined]
    assert client.get(f"{BASE}/apis").json()["count"] == 0


def test_small_alias_variant_is_not_stored(client: TestClient) -> None:
    document = yaml_bomb(levels=6)  # ~10**6 leaves: "stored as a 7 MB authType" before
    answer = _import(client, document)
    assert answer.status_code == 400
    assert client.get(f"{BASE}/apis").json()["count"] == 0


def test_huge_document_is_413_naming_the_limit(client: TestClient) -> None:
    started = time.monotonic()
    answer = _import(client, big_asyncapi())
    assert time.monotonic() - started < 5
    assert answer.status_code == 413, answer.text[:300]  # type: ignore[attr-defined]
    assert "WSGATE_CP_DOCUMENT_MAX_NODES" in answer.json()["description"]  # type: ignore[attr-defined]


def test_long_values_are_not_echoed(client: TestClient) -> None:
    version = "9" * 100_000
    document = f"asyncapi: '{version}'\ninfo: {{title: A, version: '1'}}\n".encode()
    answer = _import(client, document)
    assert answer.status_code == 400
    assert len(answer.content) < 400  # type: ignore[attr-defined]
