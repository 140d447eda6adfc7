"""Issue 13 item 5: the control plane's answers to a wrong password and to a non-JSON body
say what was wrong."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.control_plane.helpers import api_body

BASE = "/api/am/publisher/v4"


def test_wrong_basic_credentials_are_called_wrong(client: TestClient) -> None:
    client.auth = ("admin", "wrong")
    answer = client.get(f"{BASE}/apis")
    assert answer.status_code == 401
    description = answer.json()["description"]
    assert description == "Wrong user name or password for a control-plane user"
    assert "send HTTP Basic" not in description
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_missing_credentials_still_say_to_send_them(client: TestClient) -> None:
    client.auth = None
    answer = client.get(f"{BASE}/apis")
    assert answer.status_code == 401
    assert answer.json()["description"].startswith("Authentication required: send HTTP Basic")


def test_a_body_without_json_content_type_says_it_must_be_json(client: TestClient) -> None:
    import json

    answer = client.post(
        f"{BASE}/apis",
        content=json.dumps(api_body()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert answer.json()["description"] == (
        "body: the request body must be JSON, sent with 'Content-Type: application/json'"
        " (got 'application/x-www-form-urlencoded')"
    )
    answer = client.post(f"{BASE}/apis", content=json.dumps(api_body()))  # no Content-Type
    assert answer.status_code == 400
    assert "must be JSON" in answer.json()["description"]
    assert "(no Content-Type)" in answer.json()["description"]
    # A JSON body that is not an object keeps the field-level message.
    answer = client.post(f"{BASE}/apis", json=[1])
    assert answer.status_code == 400
    assert "must be JSON" not in answer.json()["description"]
