"""Issue 12 item 6 against the real processes: a burst of wrong passwords on the control
plane's Basic auth, the adapter's /oauth2/token and the router's /testkey (answered by the
enforcer) meets 429 + Retry-After, and the real user gets back in once the delay is over."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration

MAX_DELAY = 2.0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "WSGATE_AUTH_BACKOFF_FREE_FAILURES": "5",
        "WSGATE_AUTH_BACKOFF_MAX_DELAY": str(MAX_DELAY),
    }
    with start_stack(tmp_path_factory.mktemp("guarded"), env) as stack:
        yield stack


def _burst(call: Callable[[str], httpx.Response], tries: int = 30) -> list[httpx.Response]:
    return [call("wrong-password") for _ in range(tries)]


def _check(answers: list[httpx.Response], right: Callable[[], httpx.Response]) -> None:
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5, statuses
    assert statuses.count(429) >= 20, statuses
    held = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(held.headers["retry-after"]) <= MAX_DELAY
    assert set(held.json()) == {"code", "message", "description"}
    assert right().status_code == 429  # the right password waits too, for a while
    time.sleep(MAX_DELAY + 0.2)
    assert right().status_code == 200  # ... but never for longer than the max delay


def _tls(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.data_dir / "pki" / "ca.pem"))


def test_control_plane_basic_auth(guarded: Stack) -> None:
    url = f"{guarded.cp_url}/api/am/devportal/v3/applications"
    with httpx.Client(verify=_tls(guarded), timeout=10) as client:
        answers = _burst(lambda pw: client.get(url, auth=("admin", pw)))
        _check(answers, lambda: client.get(url, auth=("admin", "admin")))
    assert "sign-in backoff" in guarded.procs["control-plane"].log()
    assert "wrong-password" not in guarded.procs["control-plane"].log()


def test_adapter_token(guarded: Stack) -> None:
    url = f"{guarded.adapter_api}/oauth2/token"
    with httpx.Client(verify=_tls(guarded), timeout=10) as client:
        answers = _burst(lambda pw: client.post(url, json={"username": "admin", "password": pw}))
        _check(answers, lambda: client.post(url, auth=("admin", "admin")))


def test_router_testkey(guarded: Stack, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{guarded.ports.router}/testkey"
    with httpx.Client(timeout=10) as client:
        answers = _burst(lambda pw: client.post(url, auth=("admin", pw)))
        _check(answers, lambda: client.post(url, auth=("admin", "admin")))
    # the enforcer saw the client's address (forwarded by the router)
    assert "from 127.0.0.1" in guarded.procs["enforcer"].log()
