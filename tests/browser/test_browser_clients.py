"""Web pages as WebSocket clients, in a real headless Chromium, through the whole real stack.

The stack (control plane, adapter, enforcer, router) runs as processes on free ports; the API's
backend is a WebSocket server in this process that echoes and records every handshake request
it received. The API is published and deployed through the publisher REST API with
``securityScheme: ["oauth2", "api_key"]`` and a ``corsConfiguration`` that allows exactly the
origin of the test page. The page (``ws_page/``: HTML and one static script) is served by a tiny
HTTP server on 127.0.0.1; a second server on another port is an origin the API does not allow.

A browser cannot set headers on ``new WebSocket(...)``, so the page uses the three forms made
for browsers: ``?access_token=`` (a token from ``POST /oauth2/token``), the
``choreo-oauth2-key`` subprotocol, and ``?apikey=`` (a key minted in the developer portal;
also its subprotocol form ``choreo-api-key``).
The test reads every outcome from the page's DOM. At the end, no log line of any process and no
analytics event of the run holds any of the credentials.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import Browser
from tests.integration.apim_flow import DEVPORTAL, Apim, Keys, apim, expect, ws_api_body
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_browser_credentials import Backend, assert_clean, reporting_backend
from tests.procs import free_port, wait_for

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parent / "ws_page"
CONTEXT = "/browserchat"
TOPIC = "/browserchat/1.0.0/rooms/lobby"


class PageServer:
    """``ws_page/`` over plain HTTP on 127.0.0.1; its request log goes to a file (grepped too)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "a", encoding="utf-8")  # closed in stop()
        self._lock = threading.Lock()
        handler = partial(_PageHandler, self, directory=str(PAGE))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write(self, line: str) -> None:
        with self._lock:
            self._log.write(line + "\n")
            self._log.flush()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self._log.close()


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, page: PageServer, *args: Any, **kwargs: Any) -> None:
        self.page = page
        super().__init__(*args, **kwargs)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        self.page.write(f"{self.address_string()} {format % args}")


@dataclass
class World:
    stack: Stack
    backend: Backend
    am: Apim
    app_id: str
    keys: Keys
    allowed: PageServer
    other: PageServer
    analytics: Path
    secrets: list[str] = field(default_factory=list)  # every credential handed out

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.stack.ports.router}{TOPIC}"

    def token(self) -> str:
        token = self.am.token(self.keys, "")
        self.secrets.append(token)
        return token

    def api_key(self) -> str:
        body = {"validityPeriod": 600, "additionalProperties": {}}
        path = f"{DEVPORTAL}/applications/{self.app_id}/api-keys/PRODUCTION/generate"
        made = expect(self.am.http.post(path, json=body), 200)
        key = str(made["apikey"])
        self.secrets.append(key)
        return key

    def logs(self) -> dict[str, str]:
        assert self.stack.log_dir is not None
        texts = {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.stack.log_dir.glob("*.log"))
        }
        for page in (self.allowed, self.other):
            texts[f"page server {page.origin}"] = page.log_path.read_text(errors="replace")
        if self.analytics.exists():
            texts["analytics"] = self.analytics.read_text(errors="replace")
        return texts

    def metrics(self) -> dict[str, str]:
        """Every component's Prometheus exposition (the labels must not hold a credential)."""
        ports = self.stack.ports
        urls = {
            "router metrics": f"http://127.0.0.1:{ports.router}/metrics",
            "enforcer metrics": f"http://127.0.0.1:{ports.enforcer_http}/metrics",
            "adapter metrics": f"https://127.0.0.1:{ports.adapter_rest}/metrics",
            "control-plane metrics": f"https://127.0.0.1:{ports.cp}/metrics",
        }
        texts = {}
        for name, url in urls.items():
            answer = httpx.get(url, verify=False, timeout=10)
            assert answer.status_code == 200, (url, answer.status_code)
            texts[name] = answer.text
        return texts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("browser-clients")
    analytics = base / "analytics.jsonl"
    env = {
        "WSGATE_LOG_LEVEL": "DEBUG",
        "WSGATE_ROUTER_ANALYTICS_FILE": str(analytics),
        "WSGATE_ROUTER_ANALYTICS_INTERVAL": "0.2",
    }
    with contextlib.ExitStack() as held:
        backend = held.enter_context(reporting_backend())
        stack = held.enter_context(start_stack(base, env))
        assert stack.log_dir is not None
        allowed = PageServer(stack.log_dir.parent / "page-allowed.txt")
        held.callback(allowed.stop)
        other = PageServer(stack.log_dir.parent / "page-other.txt")
        held.callback(other.stop)
        am = held.enter_context(apim(stack))

        body = ws_api_body("BrowserChat", CONTEXT, backend.port, sandbox=False)
        body["endpointConfig"]["production_endpoints"]["url"] = f"ws://127.0.0.1:{backend.port}"
        body["securityScheme"] = ["oauth2", "api_key"]
        body["corsConfiguration"] = {
            "corsConfigurationEnabled": True,
            "accessControlAllowOrigins": [allowed.origin],
        }
        api_id = am.live_api(body)
        shown = expect(am.http.get(f"/api/am/publisher/v4/apis/{api_id}"), 200)
        assert shown["securityScheme"] == ["oauth2", "api_key"], shown
        assert shown["corsConfiguration"]["accessControlAllowOrigins"] == [allowed.origin], shown
        app_id, _, keys = am.subscribed_app("BrowserApp", [api_id])
        world = World(stack, backend, am, app_id, keys, allowed, other, analytics)
        probe = world.token()
        wait_for(
            lambda: _python_echo(world.ws, {"Authorization": f"Bearer {probe}"}),
            20,
            "the API deployed through the control plane to answer on the router",
        )
        yield world


def _python_echo(url: str, headers: dict[str, str]) -> bool:
    from websockets.sync.client import connect

    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        ws.send("probe")
        return ws.recv(5) == "probe"


@pytest.fixture(scope="module")
def browser(world: World, browser_factory: type[Browser], screenshots: Path) -> Iterator[Browser]:
    chromium = browser_factory([], screenshots)
    try:
        yield chromium
    finally:
        chromium.close()


# ---- the page, read through the DOM ----------------------------------------------------------


def cell(browser: Browser, name: str) -> str:
    text: str = browser.driver.find_element(By.ID, name).text
    return text


def events(browser: Browser) -> list[str]:
    return [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "#events li")]


def open_page(browser: Browser, page: PageServer) -> None:
    if not browser.driver.current_url.startswith(page.origin + "/"):
        browser.base = page.origin
        browser.open("/index.html")
        wait_for(lambda: cell(browser, "origin") == page.origin, 10, "the page's script")
    assert cell(browser, "origin") == page.origin


def connect(
    browser: Browser, form: str, url: str, protocols: list[str], messages: list[str]
) -> None:
    browser.driver.execute_script(
        "window.wsgateClient.connect(arguments[0], arguments[1], arguments[2], arguments[3])",
        form,
        url,
        protocols,
        messages,
    )


def until_state(browser: Browser, wanted: Callable[[str], bool], limit: float = 10) -> str:
    try:
        wait_for(lambda: wanted(cell(browser, "state")), limit, "the page")
    except TimeoutError:
        raise AssertionError(
            f"page state {cell(browser, 'state')!r}; events: {events(browser)}"
        ) from None
    return cell(browser, "state")


# ---- allowed origin: the three browser forms echo --------------------------------------------

MESSAGES = ["hello from chromium", "second message"]
FORMS = ["access_token", "choreo-oauth2-key", "apikey", "choreo-api-key"]


def echo_with(world: World, browser: Browser, form: str, shot: str = "allowed") -> str:
    """Connect the allowed page with a fresh credential in ``form`` and see both messages
    echoed; returns the credential."""
    open_page(browser, world.allowed)
    browser.console_errors()  # forget what came before
    if form == "access_token":
        secret = world.token()
        url, protocols, selected = f"{world.ws}?access_token={secret}", [], "(none)"
    elif form == "choreo-oauth2-key":
        secret = world.token()
        url, protocols, selected = world.ws, ["choreo-oauth2-key", secret], "choreo-oauth2-key"
    elif form == "apikey":
        secret = world.api_key()
        url, protocols, selected = f"{world.ws}?apikey={secret}", [], "(none)"
    else:
        secret = world.api_key()
        url, protocols, selected = world.ws, ["choreo-api-key", secret], "choreo-api-key"
    connect(browser, form, url, protocols, MESSAGES)
    until_state(browser, lambda s: s in ("echoed", "closed"))
    browser.screenshot(f"{shot}-{form}")
    assert cell(browser, "state") == "echoed", events(browser)
    assert cell(browser, "echoes") == " | ".join(MESSAGES)
    assert cell(browser, "protocol") == selected
    assert cell(browser, "error") == "no"
    assert secret not in browser.text  # the page never shows the credential
    assert browser.console_errors() == []  # Chromium accepted the handshake answer as it was
    return secret


def refused_elsewhere(world: World, browser: Browser, shot: str = "refused") -> None:
    """The page on the other origin, with a good token: the handshake fails in the page."""
    open_page(browser, world.other)
    browser.console_errors()  # forget what came before
    connect(browser, "access_token", f"{world.ws}?access_token={world.token()}", [], MESSAGES)
    until_state(browser, lambda s: s == "closed")
    browser.screenshot(f"{shot}-other-origin")
    assert cell(browser, "close-code") == "1006", events(browser)
    assert cell(browser, "error") == "yes"
    assert not any(e.split("  ", 1)[-1].startswith("open") for e in events(browser))
    assert cell(browser, "echoes") == "-"
    # Chromium's own account of the failure: the gateway answered 403 to the upgrade
    errors = browser.console_errors()
    assert any("Unexpected response code: 403" in e for e in errors), errors


@pytest.mark.parametrize("form", FORMS)
def test_page_from_the_allowed_origin_echoes_with_each_browser_form(
    world: World, browser: Browser, form: str
) -> None:
    seen = len(world.backend.accepted)
    echo_with(world, browser, form)

    # exactly one new backend handshake, carrying the page's origin and no credential carrier
    wait_for(lambda: len(world.backend.accepted) > seen, 5, "the backend handshake record")
    assert len(world.backend.accepted) == seen + 1
    report = world.backend.accepted[-1]
    assert_clean(report, *world.secrets)
    assert "?" not in report["path"], report  # the query held only the credential
    headers = {name.lower(): value for name, value in report["headers"]}
    assert "sec-websocket-protocol" not in headers, report
    assert headers.get("origin") == world.allowed.origin, report  # the page's own origin


# ---- disallowed origin: refused before any backend connection --------------------------------


def test_page_from_another_origin_is_refused_with_403(world: World, browser: Browser) -> None:
    seen = len(world.backend.accepted)
    assert world.stack.log_dir is not None
    router_log = world.stack.log_dir / "router.log"
    enforcer_text = (world.stack.log_dir / "enforcer.log").read_text(errors="replace")
    denied_before = enforcer_text.count(f"Origin '{world.other.origin}' is not allowed")
    refused_elsewhere(world, browser)
    assert len(world.backend.accepted) == seen  # no backend connection was opened

    # the gateway refused it with 403: the enforcer names the origin, the router logs the same
    # request as rejected with 403
    enforcer_log = world.stack.log_dir / "enforcer.log"
    refusal = f"Origin '{world.other.origin}' is not allowed to connect to this API"

    def denied() -> list[str]:
        lines = enforcer_log.read_text(errors="replace").splitlines()
        return [line for line in lines if refusal in line]

    wait_for(lambda: len(denied()) > denied_before, 5, "the enforcer's log line")
    line = denied()[-1]
    assert ": denied 403 " in line, line
    request_id = line.split(" request ", 1)[1].split()[0]
    wait_for(
        lambda: f"handshake {request_id} " in router_log.read_text(errors="replace"),
        5,
        "the router's log line for that request",
    )
    routed = [
        row
        for row in router_log.read_text(errors="replace").splitlines()
        if f"handshake {request_id} " in row
    ]
    assert len(routed) == 1 and "result=rejected status=403" in routed[0], routed
    assert "access_token" not in routed[0], routed  # the logged path has no credential carrier

    # the same page, back on the allowed origin, still connects (the refusal was the origin's)
    open_page(browser, world.allowed)
    connect(browser, "access_token", f"{world.ws}?access_token={world.token()}", [], MESSAGES)
    assert until_state(browser, lambda s: s in ("echoed", "closed")) == "echoed", events(browser)


# ---- a revoked API key closes the page's live socket -----------------------------------------


def test_revoking_the_api_key_closes_the_live_page_socket_with_1008(
    world: World, browser: Browser
) -> None:
    open_page(browser, world.allowed)
    key = world.api_key()
    connect(browser, "apikey", f"{world.ws}?apikey={key}", [], ["before revocation"])
    assert until_state(browser, lambda s: s in ("echoed", "closed")) == "echoed", events(browser)
    browser.screenshot("apikey-live-before-revoke")

    # same clock: the page stamps its close with Date.now(), this process with time.time()
    path = f"{DEVPORTAL}/applications/{world.app_id}/api-keys/PRODUCTION/revoke"
    asked_ms = time.time() * 1000
    answer = world.am.http.post(path, json={"apikey": key})
    answered_ms = time.time() * 1000
    assert answer.status_code == 200, answer.text
    until_state(browser, lambda s: s == "closed", limit=3)
    closed_at_ms = int(cell(browser, "closed-at"))
    browser.screenshot("apikey-revoked-closed")
    took_ms = closed_at_ms - asked_ms
    print(
        f"\nrevoked API key: the page saw close {cell(browser, 'close-code')} {took_ms:.0f} ms"
        f" after the revoke request ({closed_at_ms - answered_ms:.0f} ms after its answer)"
    )
    assert cell(browser, "close-code") == "1008", events(browser)
    assert cell(browser, "close-reason") not in ("", "(none)")
    assert took_ms < 1000, f"closed {took_ms:.0f} ms after the revoke request"

    # and the key no longer opens a socket: the upgrade is answered 401
    browser.console_errors()  # forget what came before
    connect(browser, "apikey", f"{world.ws}?apikey={key}", [], ["after revocation"])
    until_state(browser, lambda s: s == "closed")
    browser.screenshot("apikey-revoked-refused")
    assert cell(browser, "close-code") == "1006" and cell(browser, "echoes") == "-"
    errors = browser.console_errors()
    assert any("HTTP Authentication failed" in e for e in errors), errors  # Chromium's 401


# ---- no credential text in any log or event --------------------------------------------------


def test_no_credential_in_any_log_line_analytics_event_or_metric(
    world: World, browser: Browser
) -> None:
    # Last in this module: it checks every credential the tests before it used, and uses each
    # form once more itself (so it proves something when run alone too).
    for form in FORMS:
        echo_with(world, browser, form, shot="again")
    refused_elsewhere(world, browser, shot="again")
    wait_for(lambda: world.analytics.exists() and world.analytics.stat().st_size > 0, 5, "events")
    time.sleep(0.5)  # one more analytics flush
    texts = world.logs()
    names = set(texts)
    assert {"control-plane.log", "adapter.log", "enforcer.log", "router.log"} <= names, names
    metrics = world.metrics()
    assert "wsgate_router_handshakes_total" in metrics["router metrics"]
    texts.update(metrics)
    events_seen = [json.loads(line) for line in texts["analytics"].splitlines()]
    assert any(e.get("event") == "handshake" and e.get("status") == 403 for e in events_seen), (
        events_seen[:5]
    )
    assert sum(text.count("\n") for text in texts.values()) > 50  # the run did log
    for secret in world.secrets:
        signature = secret.rsplit(".", 1)[-1]
        for name, text in texts.items():
            assert secret not in text, f"a credential is in {name}"
            assert signature not in text, f"a credential's signature is in {name}"


def test_page_server_never_saw_a_credential(world: World, browser: Browser) -> None:
    """The page is static: the credentials reached the router only (never its own origin)."""
    for page in (world.allowed, world.other):
        open_page(browser, page)
        served = page.log_path.read_text()
        assert "GET /index.html" in served and "GET /client.js" in served, served
        assert "token" not in served and "apikey" not in served
