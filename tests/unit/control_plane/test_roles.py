"""Users' roles: parsing WSGATE_CP_ROLES and which API each role opens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.roles import parse_roles, roles_of
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import ADMIN, BASE, DEVPORTAL


def test_parse_roles_and_defaults() -> None:
    listed = parse_roles(" dev=subscriber ; pub=publisher,subscriber;ops=admin")
    assert listed == {
        "dev": frozenset({"subscriber"}),
        "pub": frozenset({"publisher", "subscriber"}),
        "ops": frozenset({"admin"}),
    }
    assert roles_of("ops", listed) == {"admin", "publisher", "subscriber"}
    assert roles_of("admin", {}) == {"admin", "publisher", "subscriber"}
    assert roles_of("someone", {}) == {"subscriber"}
    assert roles_of("pub", listed) == {"publisher", "subscriber"}


@pytest.mark.parametrize(
    "spec", ["dev", "=subscriber", "dev=sub scriber"], ids=["no-eq", "no-user", "space"]
)
def test_parse_roles_rejects_malformed(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_roles(spec)


@pytest.fixture
def team(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(
        update={
            "cp_users": "admin:admin,dev:dev,pub:pub",
            "cp_roles": "dev=subscriber;pub=publisher",
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("dev", f"{BASE}/apis", 403),
        ("dev", f"{DEVPORTAL}/applications", 200),
        ("dev", f"{ADMIN}/environments", 403),
        ("pub", f"{BASE}/apis", 200),
        ("pub", f"{DEVPORTAL}/applications", 403),
        ("pub", f"{ADMIN}/throttling/policies/subscription", 403),
        ("admin", f"{BASE}/apis", 200),
        ("admin", f"{DEVPORTAL}/applications", 200),
        ("admin", f"{ADMIN}/throttling/policies/application", 200),
    ],
    ids=lambda v: str(v).rsplit("/", 1)[-1],
)
def test_each_api_needs_its_role(team: TestClient, user: str, path: str, status: int) -> None:
    answer = team.get(path, auth=(user, user))
    assert answer.status_code == status, answer.text
    if status == 403:
        body = answer.json()
        assert body["code"] == 403
        assert user in body["description"] and "role" in body["description"]


def test_wrong_password_is_401_with_challenge(team: TestClient) -> None:
    answer = team.get(f"{DEVPORTAL}/applications", auth=("dev", "nope"))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert team.get(f"{ADMIN}/environments").status_code == 401


def test_malformed_roles_setting_is_refused(settings: ControlPlaneSettings) -> None:
    with pytest.raises(ValueError, match="role entry"):
        create_app(settings.model_copy(update={"cp_roles": "dev"}))
