"""Headless Chromium for the console tests, driven by Selenium over Debian's chromium-driver.

Nothing is downloaded at run time: the driver and the browser are given by path
(``/usr/bin/chromedriver``, ``/usr/bin/chromium``, from ``make browser-deps``), so Selenium
Manager is never asked to find or fetch one, and ``SE_OFFLINE`` tells it not to try anyway.
The browser trusts only the public keys of the stack's own certificates
(``--ignore-certificate-errors-spki-list``), not every certificate.

Screenshots go to ``.wsgate/screenshots/<test module>/`` (or ``$WSGATE_SCREENSHOTS``), which
git ignores; look at them after a run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path(os.environ.get("WSGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("WSGATE_CHROMEDRIVER", "/usr/bin/chromedriver"))
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("WSGATE_SCREENSHOTS", ROOT / ".wsgate" / "screenshots"))

#: No background traffic, no updates, no sync: the browser talks to the stack under test only.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


#: Every host name but localhost fails to resolve: nothing can leave the machine.
OFFLINE_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"


def spki_sha256(pem: bytes) -> str:
    """Base64 SHA-256 of a certificate's SubjectPublicKeyInfo (Chromium's SPKI pin form)."""
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def trusted_pins(pki: Path) -> list[str]:
    """The SPKI pins of every certificate in a stack's PKI directory (CA and servers)."""
    pins = []
    for path in sorted(pki.glob("*.pem")):
        text = path.read_bytes()
        if b"BEGIN CERTIFICATE" in text:
            pins.append(spki_sha256(text))
    return pins


def chromium_flags(user_data_dir: Path, pins: list[str]) -> list[str]:
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"]
    if pins:
        flags.append("--ignore-certificate-errors-spki-list=" + ",".join(pins))
    return flags


def browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing: run `make browser-deps` (Debian chromium chromium-driver)"
    return None


class Browser:
    """One Chromium session with the few verbs the console tests use."""

    def __init__(self, pins: list[str], shots: Path, offline: bool = False) -> None:
        """``offline``: no host name but ``localhost`` resolves (as on a machine without
        internet), and every request the browser starts is logged for :meth:`requested`."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not go online
        self.profile = Path(tempfile.mkdtemp(prefix="wsgate-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in chromium_flags(self.profile, pins):
            options.add_argument(flag)
        logs = {"browser": "ALL"}  # CSP violations
        if offline:
            options.add_argument(OFFLINE_FLAG)
            logs["performance"] = "ALL"  # DevTools Network events: every request started
        options.set_capability("goog:loggingPrefs", logs)
        service = Service(executable_path=str(CHROMEDRIVER))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(30)
        self.shots = shots
        self.base = ""

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- navigation ---------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return re.sub(r"^https?://[^/]+", "", url)

    @property
    def text(self) -> str:
        from selenium.webdriver.common.by import By

        body: str = self.driver.find_element(By.TAG_NAME, "body").text
        return body

    def title(self) -> str:
        title: str = self.driver.title
        return title

    # --- forms (found by their visible <label>, as a person would) -------------------------

    def field(self, label: str) -> WebElement:
        """The input whose <label> reads ``label`` exactly."""
        from selenium.webdriver.common.by import By

        for element in self.driver.find_elements(By.TAG_NAME, "label"):
            if element.text.strip().rstrip("*").strip() == label:
                target = element.get_attribute("for")
                if target:
                    return self.driver.find_element(By.ID, target)
        raise AssertionError(f"no input labelled {label!r} on {self.path}")

    def fill(self, label: str, value: str) -> None:
        element = self.field(label)
        element.clear()
        element.send_keys(value)

    def value(self, label: str) -> str:
        value: str = self.field(label).get_attribute("value") or ""
        return value

    def click(self, text: str, within: str = "", navigates: bool = True) -> None:
        """Click the button or link whose visible text is ``text`` (the first one); by default
        wait until the browser shows the next page, fully loaded (a form post or a link)."""
        from selenium.webdriver.common.by import By

        scope = self.driver.find_element(By.CSS_SELECTOR, within) if within else self.driver
        for element in scope.find_elements(By.CSS_SELECTOR, "button, a, input[type=submit]"):
            if element.text.strip() == text and element.is_displayed():
                mark = self._mark_page() if navigates else ""
                element.click()
                if navigates:
                    self._wait_for_next_page(mark)
                return
        raise AssertionError(f"no button or link {text!r} on {self.path}")

    def _mark_page(self) -> str:
        """Tag the current page's window object; the next page's has no tag."""
        mark = uuid.uuid4().hex
        self.driver.execute_script("window.wsgateTestMark = arguments[0]", mark)
        return mark

    def _wait_for_next_page(self, mark: str, limit: float = 15) -> None:
        """Until a page other than the tagged one has loaded completely.

        Not Selenium's ``staleness_of(<html>)``: while a navigation replaces the document,
        chromedriver may answer a look at the old element with "unknown error: unhandled
        inspector error: Node with given id does not belong to the document" rather than a
        stale element (SeleniumHQ/selenium#15401), which that wait does not expect; and it
        returns as soon as the new document exists, before it is loaded. Errors while the
        navigation runs mean "not there yet"; the last one is reported if it never ends.
        """
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + limit
        last: WebDriverException | None = None
        while time.monotonic() < deadline:
            try:
                if self.driver.execute_script(
                    "return window.wsgateTestMark !== arguments[0]"
                    " && document.readyState === 'complete'",
                    mark,
                ):
                    return
            except WebDriverException as exc:  # the document is being replaced
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"the page did not change within {limit} s (last error: {last})")

    def error_beside(self, label: str) -> str:
        """The error text shown next to the field labelled ``label`` ('' when none)."""
        from selenium.webdriver.common.by import By

        element = self.field(label)
        container = element.find_element(By.XPATH, "./ancestor::div[contains(@class,'field')]")
        found = container.find_elements(By.CSS_SELECTOR, ".errorlist")
        return found[0].text if found else ""

    def sign_in(self, console: str, user: str, password: str) -> None:
        self.open(f"/{console}/login")
        self.fill("Username", user)
        self.fill("Password", password)
        self.click("Sign In")

    def sign_out(self) -> None:
        self.click("Sign out")

    def console_errors(self) -> list[str]:
        """Errors the page logged since the last call (CSP violations, failed loads, ...)."""
        entries = self.driver.get_log("browser")
        return [str(e["message"]) for e in entries if e.get("level") == "SEVERE"]

    def foreign_resources(self) -> list[str]:
        """Resources this page loaded from anywhere but the console's own origin."""
        names = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        return [str(n) for n in names if not str(n).startswith(self.base + "/")]

    def requested(self) -> list[str]:
        """The URL of every request the browser started since the last call, whether or not
        it got an answer (DevTools ``Network.requestWillBeSent``; needs ``offline=True``)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(str(message["params"]["request"]["url"]))
        return urls

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def browser_factory(
    request: pytest.FixtureRequest,
) -> Iterator[type[Browser]]:
    """Fails (naming the packages) when Chromium is not installed; ``make test`` installs it."""
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    yield Browser


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Path:
    name = request.module.__name__.rsplit(".", 1)[-1]
    folder = SCREENSHOTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
