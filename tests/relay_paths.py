"""Both relay paths under the router's behaviour tests: the compiled core and its Python twin.

The ``relay_path`` fixture (tests/conftest.py) runs a test once per entry of RELAY_PATHS.
In-process tests pass it as ``RouterConfig(relay=...)``, process tests as ``WSGATE_RELAY``.
"native" needs ``router._core``: when it does not import, the test FAILS under ``CI=true`` (a
missing build must not pass as a skip) and skips elsewhere, saying why. Handshake-only tests
(nothing relayed) run on the Python path alone: mark them with :data:`python_relay_only`.

Each router reports the path it really runs (``wsgate_router_relay_info{path=...}`` on
/metrics): :func:`check_reported` makes a "native" run that silently fell back to Python fail.
"""

from __future__ import annotations

import functools
import importlib
import re

import httpx
import pytest

from tests.procs import unavailable
from wsgate_common.metrics import parse_samples

RELAY_PATHS = ("python", "native")
RELAY_INFO = re.compile(
    r'^wsgate_router_relay_info\{[^}]*path="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)\s*$', re.M
)

#: For tests of the handshake alone: the relay is never reached, so one path is enough.
python_relay_only = pytest.mark.parametrize("relay_path", ["python"], indirect=True)

#: For tests of the native path's own choices (which connections it takes).
native_relay_only = pytest.mark.parametrize("relay_path", ["native"], indirect=True)


@functools.cache
def native_import_error() -> str | None:
    """Why ``router._core`` does not import (None: it does)."""
    try:
        importlib.import_module("router._core")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def require(path: str) -> str:
    """``path`` when this machine can run it; else skip (fail under CI=true) naming why."""
    if path == "native":
        error = native_import_error()
        if error is not None:
            unavailable(
                f"the native relay core router._core does not import ({error}); "
                "build it with `make install` (pip install -e .)"
            )
    return path


def relay_env(path: str) -> dict[str, str]:
    """The environment a router process gets for ``path``."""
    return {"WSGATE_RELAY": path}


def reported(metrics_text: str) -> str | None:
    """The relay path a router's /metrics page names (None: the metric is absent)."""
    for path, value in RELAY_INFO.findall(metrics_text):
        if float(value) > 0:
            return path
    return None


def check_reported(metrics_text: str, path: str) -> None:
    """The router runs the path the test asked for. "native" must be reported as such; "python"
    as python, or not at all by a router that predates the metric."""
    found = reported(metrics_text)
    if path == "native":
        assert found == "native", f"asked for the native relay, /metrics reports {found!r}"
    else:
        assert found in (path, None), f"asked for the {path} relay, /metrics reports {found!r}"


def check_router(port: int, path: str) -> None:
    """:func:`check_reported` on the /metrics page of the router process listening on ``port``."""
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text[:300]
    check_reported(answer.text, path)


def active_connections(metrics_text: str) -> float:
    """``wsgate_router_connections_active`` from a /metrics page: the relayed connections, on
    either path (a test reading the Python relay's own set would pass vacuously on the core)."""
    return parse_samples(metrics_text).get("wsgate_router_connections_active", 0.0)
