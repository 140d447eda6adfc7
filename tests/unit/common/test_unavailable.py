"""A missing PostgreSQL or Redis skips a test on a developer's machine and fails it in CI."""

from __future__ import annotations

import pytest

from tests.procs import import_or_unavailable, unavailable


def test_missing_service_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Redis"):
        unavailable("no Redis answers")


def test_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("PostgreSQL at 127.0.0.1:5432 is unreachable")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_wsgate"):
        import_or_unavailable("no_such_module_wsgate")
    assert import_or_unavailable("json").dumps([]) == "[]"
