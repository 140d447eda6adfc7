"""Fixtures of the console page tests: an HTTPS TestClient (the session cookie is Secure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.helpers import FakeAdapter
from tests.unit.control_plane.web.helpers import ROLES, USERS, sign_in


@pytest.fixture
def web(settings: ControlPlaneSettings) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"cp_users": USERS, "cp_roles": ROLES})
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        yield client


@pytest.fixture
def publisher_web(web: TestClient) -> TestClient:
    sign_in(web, "publisher", "publisher1", "pub-pass")
    return web


@pytest.fixture
def publisher_deploying(
    settings: ControlPlaneSettings, fake_adapter: tuple[FakeAdapter, str]
) -> Iterator[tuple[TestClient, FakeAdapter]]:
    """Signed in as a publisher, with a (fake, gRPC) adapter that accepts deployments."""
    adapter, address = fake_adapter
    settings = settings.model_copy(
        update={"cp_users": USERS, "cp_roles": ROLES, "cp_adapter_address": address}
    )
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        sign_in(client, "publisher", "publisher1", "pub-pass")
        yield client, adapter
