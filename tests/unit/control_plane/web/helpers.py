"""Helpers for console page tests: an HTTPS TestClient (the session cookie is Secure), sign
in through the form, and read the CSRF token and field errors out of a page."""

from __future__ import annotations

import html
import re

import httpx
from fastapi.testclient import TestClient

USERS = "admin:admin,publisher1:pub-pass,dev1:dev-pass"
ROLES = "publisher1=publisher;dev1=subscriber"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


def field_errors(page: str) -> dict[str, str]:
    """Form field name -> its error text, as the page shows them beside the fields."""
    errors: dict[str, str] = {}
    for name, items in re.findall(r'<ul class="errorlist" id="([\w-]+)-error">(.*?)</ul>', page):
        errors[name] = " ".join(html.unescape(t) for t in re.findall(r"<li>(.*?)</li>", items))
    return errors


def sign_in(client: TestClient, console: str, user: str, password: str) -> httpx.Response:
    """Sign in through the form; returns the page it leads to."""
    token = csrf_of(client.get(f"/{console}/login").text)
    answer = client.post(
        f"/{console}/login",
        data={"username": user, "password": password, "csrf_token": token, "next": ""},
    )
    assert answer.history and answer.history[0].status_code == 303, answer.text
    return answer
