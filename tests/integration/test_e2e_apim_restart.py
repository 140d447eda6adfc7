"""Restarts lose nothing: the control plane keeps applications, subscriptions and keys in its
database (and its token-signing key on disk); a restarted adapter gets every API and the whole
subscription data set back from the control plane. This module has its own stack (the fixture
is module-scoped) because it stops and starts components.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.apim_flow import (
    DEVPORTAL,
    Keys,
    apim,
    denial,
    expect,
    wait_status_sync,
    ws_api_body,
)
from tests.integration.conftest import Stack, handshake
from tests.procs import PROMPT

pytestmark = pytest.mark.integration

URL = "/restart/1.0.0/notifications"


@dataclass
class Setup:
    stack: Stack
    api_id: str
    app_id: str
    subscription_id: str
    keys: Keys
    token: str


@pytest.fixture(scope="module")
def setup(stack: Stack) -> Iterator[Setup]:
    with apim(stack) as am:
        api_id = am.live_api(ws_api_body("Restart", "/restart", stack.ports.echo))
        app_id, (subscription_id,), keys = am.subscribed_app("RestartApp", [api_id])
        token = am.token(keys)
    wait_status_sync(stack.ws + URL, token, 101)
    yield Setup(stack, api_id, app_id, subscription_id, keys, token)


def test_control_plane_restart_loses_nothing(setup: Setup) -> None:
    stack = setup.stack
    url = stack.ws + URL
    stack.stop("control-plane")
    # The data plane does not need the control plane to carry traffic.
    assert handshake(url, setup.token).echoed == "hello"
    started = time.monotonic()
    stack.start("control-plane")
    print(f"\ncontrol plane restarted in {time.monotonic() - started:.2f} s")
    with apim(stack) as am:
        app = expect(am.http.get(f"{DEVPORTAL}/applications/{setup.app_id}"), 200)
        assert app["name"] == "RestartApp", app
        sub = expect(am.http.get(f"{DEVPORTAL}/subscriptions/{setup.subscription_id}"), 200)
        assert sub["status"] == "UNBLOCKED" and sub["throttlingPolicy"] == "AsyncGold", sub
        fresh = am.token(setup.keys)  # the same consumer key and secret still work
        assert fresh != setup.token
        assert wait_status_sync(url, fresh, 101).echoed == "ping"
        # Tokens issued before the restart are still signed with a trusted key.
        assert handshake(url, setup.token).status == 101
        # And the restarted control plane still pushes changes.
        other_app = am.create_application("AfterCpRestart")
        other_keys = am.generate_keys(other_app)
        other_token = am.token(other_keys, scope="")
        rooms = stack.ws + "/restart/1.0.0/rooms/lobby"  # no scope: the token predates the sub
        denial(handshake(rooms, other_token), 403, 900908)
        am.subscribe(other_app, setup.api_id)
        wait_status_sync(rooms, other_token, 101, limit=PROMPT)


def test_adapter_restart_resyncs_apis_and_subscription_data(setup: Setup) -> None:
    stack = setup.stack
    url = stack.ws + URL
    stack.stop("adapter")
    started = time.monotonic()
    stack.start("adapter")
    # The enforcer is restarted too, so all it knows comes from the new adapter, which keeps no
    # copy of anything: APIs and subscription data must have been re-sent by the control plane.
    stack.restart("enforcer")
    with apim(stack) as am:
        token = am.token(setup.keys)
        _wait_echo(url, token, 15)
        back = time.monotonic() - started
        print(f"\nadapter + enforcer restart -> traffic flows again: {back:.2f} s")
        unsubscribed = am.token(am.generate_keys(am.create_application("AfterAdapterRestart")))
        denial(handshake(url, unsubscribed), 403, 900908)
        blocked = am.block_subscription(setup.subscription_id, "BLOCKED")
        assert blocked.status_code == 200, blocked.text
        denial(wait_status_sync(url, token, 403, limit=PROMPT), 403, 900907)
        expect(am.unblock_subscription(setup.subscription_id), 200)
        wait_status_sync(url, token, 101, limit=PROMPT)


def _wait_echo(url: str, token: str, limit: float) -> float:
    started = time.monotonic()
    last = None
    while time.monotonic() - started < limit:
        last = handshake(url, token)
        if last.echoed == "hello":
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"no echo {limit} s after the restart; last answer {last}")
