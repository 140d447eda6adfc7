"""The Developer Portal in a real headless Chromium against the whole stack as real processes
(control plane, adapter, enforcer, router, echo backend): the seed's second half, click by
click. A subscriber signs in, finds DefaultApplication, subscribes it on AsyncGold, generates
Production keys, gets a test key, connects in the in-browser console over wss through the
router, sees a typed message echoed; then the publisher blocks the subscription (REST) and the
console shows the router's close 1008 with its reason.

The browser trusts the stack's own certificate (the one the local CA signed for both :9443
and the router's :9095) by its public key, as the harness does; nothing else is trusted.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import Browser, trusted_pins
from tests.integration.apim_flow import DEVPORTAL, Apim, expect, ws_api_body
from tests.integration.conftest import Stack, run_wscat, start_stack

pytestmark = pytest.mark.integration

DEV = ("dev1", "dev-pass")
ENV = {
    "WSGATE_CP_USERS": "admin:admin,dev1:dev-pass,pub1:pub-pass",
    "WSGATE_CP_ROLES": "dev1=subscriber;pub1=publisher",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("devportal"), ENV) as running:
        yield running


@pytest.fixture(scope="module")
def api_id(stack: Stack) -> Iterator[str]:
    """EchoWebSocket created, published and deployed through the publisher REST API."""
    apim = Apim(stack)
    try:
        yield apim.live_api(ws_api_body("EchoWebSocket", "/echowebsocket", stack.ports.echo))
    finally:
        apim.close()


@pytest.fixture(scope="module")
def browser(stack: Stack, browser_factory: type[Browser], screenshots: Path) -> Iterator[Browser]:
    chromium = browser_factory(trusted_pins(stack.data_dir / "pki"), screenshots)
    chromium.base = f"https://localhost:{stack.ports.cp}"
    try:
        yield chromium
    finally:
        chromium.close()


def wait_until(check: Callable[[], bool], what: str, browser: Browser, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    browser.screenshot("failed-" + what.replace(" ", "-")[:40])
    raise AssertionError(f"no {what} within {limit} s; page shows:\n{browser.text[-2000:]}")


def show(browser: Browser, selector: str) -> None:
    """Scroll ``selector`` into view (for the screenshot that follows)."""
    element = browser.driver.find_element(By.CSS_SELECTOR, selector)
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)


def clean_page(browser: Browser) -> None:
    """No CSP violation or failed load, nothing from elsewhere, both stylesheets applied."""
    assert browser.console_errors() == [], browser.path
    assert browser.foreign_resources() == [], browser.path
    rules = browser.driver.execute_script(
        "var s = Array.from(document.styleSheets)"
        ".find(x => (x.href || '').endsWith('/devportal.css'));"
        " return s ? s.cssRules.length : 0"
    )
    assert rules > 0, f"{browser.path}: devportal.css did not load"


def console_log(browser: Browser) -> str:
    found: str = browser.driver.find_element(By.ID, "console-log").text
    return found


def test_seed_path_in_the_developer_portal(browser: Browser, stack: Stack, api_id: str) -> None:
    # Sign in: DefaultApplication is there already, as in WSO2.
    browser.open("/devportal")
    assert browser.path.startswith("/devportal/login")
    browser.sign_in("devportal", *DEV)
    assert browser.path == "/devportal/apis"
    assert "EchoWebSocket" in browser.text
    browser.console_errors()  # drop what the sign-in pages left
    browser.screenshot("01-apis")
    browser.click("Applications")
    assert "DefaultApplication" in browser.text
    browser.screenshot("02-applications")

    # The API: its URLs and topics; subscribe DefaultApplication on AsyncGold.
    browser.click("APIs")
    browser.click("EchoWebSocket")
    assert f"wss://localhost:{stack.ports.router_tls}/echowebsocket/1.0.0" in browser.text
    assert "read:notifications" in browser.text and "/rooms/{roomId}" in browser.text
    assert Select(browser.field("Application")).first_selected_option.text == "DefaultApplication"
    Select(browser.field("Business plan")).select_by_visible_text("AsyncGold")
    clean_page(browser)
    browser.screenshot("03-api-overview")
    browser.click("Subscribe")
    assert "DefaultApplication is subscribed to EchoWebSocket on AsyncGold." in browser.text
    assert "UNBLOCKED" in browser.text
    assert "Every one of your applications is subscribed." in browser.text
    show(browser, "#api-subscriptions")
    browser.screenshot("04-subscribed")

    # Production Keys -> Generate Keys: the secret is shown once.
    browser.click("Production Keys", within="#api-subscriptions")
    browser.click("Generate Keys")
    assert "Production keys generated for DefaultApplication." in browser.text
    assert browser.field("Consumer secret").get_attribute("value")
    clean_page(browser)
    browser.screenshot("05-production-keys")

    # Try Out -> Get Test Key: commands and the console.
    browser.open(f"/devportal/apis/{api_id}/try-out")
    browser.click("Get Test Key")
    token = browser.field("Access token").get_attribute("value") or ""
    assert token.count(".") == 2, token[:40]
    ws_command = (
        f"wscat -c ws://localhost:{stack.ports.router}/echowebsocket/1.0.0/notifications"
        f' -H "Authorization:Bearer {token}"'
    )
    assert ws_command in browser.text
    browser.fill("roomId", "lobby")
    assert f"wss://localhost:{stack.ports.router_tls}/echowebsocket/1.0.0/rooms/lobby" in (
        browser.text
    )
    browser.screenshot("06-try-out")

    # The page's wss command (room filled in) runs as it stands: wscat -n through the router.
    wss_command = browser.driver.find_element(By.ID, "cmd-wss-2").text
    assert wss_command.startswith("wscat -n -c wss://") and "/rooms/lobby " in wss_command
    ran = run_wscat([*shlex.split(wss_command)[1:], "-x", "from wscat", "-w", "1"])
    assert "from wscat" in ran.stdout, (ran.stdout, ran.stderr)
    # Copy: to the clipboard when the browser allows it, else the command is selected.
    copy = browser.driver.find_element(By.CSS_SELECTOR, "button[data-copy='cmd-wss-2']")
    copy.click()
    wait_until(
        lambda: (
            copy.text == "Copied"
            or browser.driver.execute_script("return window.getSelection().toString()")
            == wss_command
        ),
        "copy",
        browser,
    )

    # The in-browser console: wss to the router, token as the choreo-oauth2-key subprotocol.
    Select(browser.field("Topic")).select_by_visible_text("/notifications")
    browser.click("Connect", navigates=False)
    wait_until(lambda: "connected (subprotocol choreo-oauth2-key)" in console_log(browser),
               "connection", browser)  # fmt: skip
    browser.fill("Message", "hello from chromium")
    browser.click("Send", navigates=False)
    wait_until(lambda: "received hello from chromium" in console_log(browser).replace("\n", " "),
               "echo", browser)  # fmt: skip
    assert "sent hello from chromium" in console_log(browser).replace("\n", " ")
    clean_page(browser)  # the console's script ran under the CSP, its wss was allowed
    show(browser, "#ws-console")
    browser.screenshot("07-console-echo")

    # The publisher blocks the subscription: the router closes the connection with 1008.
    subs = httpx.get(f"{stack.cp_url}{DEVPORTAL}/subscriptions", auth=DEV, verify=False, timeout=30)
    [subscription] = expect(subs, 200)["list"]
    apim = Apim(stack)
    try:
        expect(apim.block_subscription(subscription["subscriptionId"]), 200)
    finally:
        apim.close()
    wait_until(lambda: "close 1008 (policy violation):" in console_log(browser), "close 1008",
               browser)  # fmt: skip
    closing = [line for line in console_log(browser).splitlines() if "close 1008" in line]
    assert closing and closing[-1].split("close 1008 (policy violation): ", 1)[1].strip()
    assert browser.driver.find_element(By.ID, "console-status").text == "Closed 1008"
    browser.screenshot("08-console-blocked-1008")


def test_console_with_access_token_query_and_disconnect(
    browser: Browser, stack: Stack, api_id: str
) -> None:
    """The other browser carrier (``?access_token=``) on a fresh subscription, then
    Disconnect closes with 1000."""
    apim = Apim(stack)
    try:
        app = httpx.post(
            f"{stack.cp_url}{DEVPORTAL}/applications",
            json={"name": "Second", "throttlingPolicy": "Unlimited"},
            auth=DEV,
            verify=False,
            timeout=30,
        )
        app_id = expect(app, 201)["applicationId"]
    finally:
        apim.close()
    browser.open(f"/devportal/applications/{app_id}/subscriptions")
    Select(browser.field("API")).select_by_index(0)
    Select(browser.field("Business plan")).select_by_visible_text("AsyncGold")
    browser.click("Subscribe")
    assert "Second is subscribed to EchoWebSocket on AsyncGold." in browser.text
    browser.screenshot("09-app-subscriptions")
    browser.click("Sandbox Keys")
    browser.click("Generate Keys")
    browser.open(f"/devportal/apis/{api_id}/try-out")
    Select(browser.field("Application")).select_by_visible_text("Second")
    Select(browser.field("Key type")).select_by_visible_text("Sandbox")
    browser.click("Get Test Key")
    Select(browser.field("Send the token as")).select_by_value("query")
    browser.click("Connect", navigates=False)
    wait_until(lambda: "connected" in console_log(browser), "connection", browser)
    browser.fill("Message", "via query")
    browser.click("Send", navigates=False)
    wait_until(lambda: "received via query" in console_log(browser).replace("\n", " "), "echo",
               browser)  # fmt: skip
    browser.click("Disconnect", navigates=False)
    wait_until(lambda: "close 1000" in console_log(browser), "close 1000", browser)


def test_errors_in_the_browser(browser: Browser) -> None:
    """A field error beside its field with the values kept, a form without its CSRF token, and
    a user without the subscriber role."""
    browser.open("/devportal/applications/create")
    browser.fill("Application name", "Bad <name>")
    browser.fill("Description", "kept")
    browser.click("Save")
    assert "without the characters < >" in browser.error_beside("Application name")
    assert browser.value("Application name") == "Bad <name>"
    assert browser.value("Description") == "kept"
    browser.screenshot("10-application-error")
    browser.fill("Application name", "Forged")
    browser.driver.execute_script(
        "document.querySelector('#application-form input[name=csrf_token]').remove()"
    )
    browser.click("Save")
    assert "Request refused" in browser.text
    browser.open("/devportal/applications")
    assert "Forged" not in browser.text
    browser.sign_out()
    browser.sign_in("devportal", "pub1", "pub-pass")
    assert "Access denied" in browser.text and "lacks the 'subscriber' role" in browser.text
    browser.screenshot("11-missing-role")
