"""Suite-wide test settings."""

from __future__ import annotations

import logging

import pytest

from tests import relay_paths

# Background threads of some tests (in-test backends, the control plane's sync loop under
# TestClient) may log after pytest has closed that test's capture stream; such a late record
# is not a test failure, so logging drops it instead of printing "--- Logging error ---".
logging.raiseExceptions = False


@pytest.fixture(scope="module", params=relay_paths.RELAY_PATHS)
def relay_path(request: pytest.FixtureRequest) -> str:
    """Which relay the router under test runs: "python" or "native" (tests/relay_paths.py).
    Module scope, so a module's process stack starts once per path, not once per test."""
    return relay_paths.require(str(request.param))
