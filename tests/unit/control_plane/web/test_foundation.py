"""The console foundation: signed sessions, sign-in, CSRF, roles, security headers, and the
Publisher's Create API form, through FastAPI's TestClient."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from control_plane.settings import ControlPlaneSettings
from control_plane.web import forms
from control_plane.web.auth_pages import FailedSignIns
from control_plane.web.core import content_security_policy, router_origins, safe_next
from control_plane.web.session import COOKIE, Session, SessionCodec, load_or_create_secret
from tests.unit.control_plane.web.helpers import csrf_of, field_errors, sign_in

PUBLISHER_REST = "/api/am/publisher/v4"


# --- pure parts ---------------------------------------------------------------------------


def test_session_codec_round_trips_and_rejects_forgery_and_expiry() -> None:
    codec = SessionCodec(b"k" * 32, max_age=60)
    value = codec.dumps({"user": "alice"}, now=1000)
    assert codec.loads(value, now=1010) == {"user": "alice"}
    assert codec.loads(value, now=1061) is None  # expired
    payload, signature = value.split(".")
    assert codec.loads(payload + "." + signature[::-1], now=1010) is None
    other = SessionCodec(b"x" * 32).dumps({"user": "mallory"}, now=1000)
    assert codec.loads(other, now=1010) is None
    assert codec.loads("garbage", now=1010) is None
    assert codec.loads("", now=1010) is None


def test_session_secret_is_kept_private_and_reused(tmp_path: ControlPlaneSettings) -> None:
    first = load_or_create_secret(tmp_path)  # type: ignore[arg-type]
    assert load_or_create_secret(tmp_path) == first  # type: ignore[arg-type]
    assert ((tmp_path / "session-secret").stat().st_mode & 0o777) == 0o600  # type: ignore[operator]


def test_sign_in_rotates_the_csrf_token() -> None:
    session = Session(None)
    before = session.csrf
    session.sign_in("alice")
    assert session.csrf != before and session.user == "alice"
    assert not session.csrf_ok(before)
    assert not session.csrf_ok("") and not session.csrf_ok(None)
    assert session.csrf_ok(session.csrf)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/publisher/apis?query=x", "/publisher/apis?query=x"),
        ("https://evil.example/publisher", "/publisher"),
        ("//evil.example/publisher", "/publisher"),
        ("/devportal/apis", "/publisher"),
        ("/publisherx", "/publisher"),
        ("", "/publisher"),
    ],
)
def test_only_console_paths_follow_a_sign_in(given: str, expected: str) -> None:
    assert safe_next("publisher", given) == expected


def test_csp_allows_self_and_the_router_origins_only(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"cp_router_ws_port": 9090, "cp_router_wss_port": 9095})
    origins = router_origins(settings, "localhost")
    assert origins == ["wss://localhost:9095", "ws://localhost:9090"]
    fixed = settings.model_copy(update={"cp_router_host": "gw.example"})
    assert router_origins(fixed, "localhost")[0] == "wss://gw.example:9095"
    policy = content_security_policy(origins)
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "connect-src 'self' wss://localhost:9095 ws://localhost:9090" in policy
    assert "unsafe-inline" not in policy and "http" not in policy.replace("https", "")


def test_service_errors_land_beside_the_field_they_name() -> None:
    fields = {"name": "name", "context": "context"}
    clash = forms.from_description(
        "an API with context '/x' and version '1' already exists", fields
    )
    assert list(clash) == ["context"]
    assert forms.from_description("name: too long", fields) == {"name": ["Too long"]}
    assert list(forms.from_description("something else", fields)) == [forms.FORM]


# --- pages --------------------------------------------------------------------------------


def test_pages_need_a_sign_in_and_come_back_after_it(web: TestClient) -> None:
    answer = web.get("/publisher/apis?query=echo", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/publisher/login?next=/publisher/apis%3Fquery%3Decho"
    login = web.get(answer.headers["location"])
    token = csrf_of(login.text)
    after = web.post(
        "/publisher/login",
        data={
            "username": "publisher1",
            "password": "pub-pass",
            "csrf_token": token,
            "next": "/publisher/apis?query=echo",
        },
        follow_redirects=False,
    )
    assert after.status_code == 303 and after.headers["location"] == "/publisher/apis?query=echo"


def test_session_cookie_is_httponly_secure_lax_and_signed(web: TestClient) -> None:
    answer = web.get("/publisher/login")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    for flag in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert flag in cookie
    token = csrf_of(answer.text)
    web.cookies.clear()
    web.cookies.set(COOKIE, "forged.value")
    refused = web.post(
        "/publisher/login", data={"username": "admin", "password": "admin", "csrf_token": token}
    )
    assert refused.status_code == 403  # a forged cookie is a new session with another token


def test_wrong_password_is_400_with_the_username_kept(web: TestClient) -> None:
    token = csrf_of(web.get("/publisher/login").text)
    answer = web.post(
        "/publisher/login",
        data={"username": "publisher1", "password": "nope", "csrf_token": token},
    )
    assert answer.status_code == 400
    assert "Wrong username or password." in answer.text
    assert 'value="publisher1"' in answer.text
    assert "nope" not in answer.text
    assert web.get("/publisher/apis", follow_redirects=False).status_code == 303


def test_failed_sign_ins_back_off_per_user() -> None:
    failures = FailedSignIns()
    for _ in range(FailedSignIns.FREE):
        assert failures.wait("bob", 100.0) == 0
        failures.failed("bob", 100.0)
    assert failures.wait("bob", 100.0) == 1.0
    assert failures.wait("bob", 101.0) == 0  # the wait is over: one more try
    failures.failed("bob", 101.0)
    assert failures.wait("bob", 101.0) == 2.0  # doubled
    assert failures.wait("alice", 101.0) == 0  # per user
    assert failures.wait("bob", 101.0 + FailedSignIns.WINDOW + 1) == 0  # forgotten
    failures.succeeded("bob")
    assert failures.wait("bob", 101.0) == 0


def test_sixth_wrong_password_in_a_row_must_wait(web: TestClient) -> None:
    token = csrf_of(web.get("/publisher/login").text)
    wrong = {"username": "publisher1", "password": "nope", "csrf_token": token}
    for _ in range(FailedSignIns.FREE):
        assert web.post("/publisher/login", data=wrong).status_code == 400
    right = {**wrong, "password": "pub-pass"}
    waiting = web.post("/publisher/login", data=right)
    assert waiting.status_code == 429 and "try again in 1 s" in waiting.text
    assert web.post("/devportal/login", data=right).status_code == 429  # not per console
    other = web.post("/devportal/login", data={**wrong, "username": "dev1", "password": "dev-pass"})
    assert other.status_code == 200  # another user is not held up


def test_missing_role_is_a_403_page_not_json(web: TestClient) -> None:
    answer = sign_in(web, "publisher", "dev1", "dev-pass")
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "lacks the &#39;publisher&#39; role" in answer.text


def test_state_changes_need_the_csrf_token(publisher_web: TestClient) -> None:
    body = {"name": "A", "context": "/a", "version": "1", "production_endpoint": "ws://h:1"}
    missing = publisher_web.post("/publisher/apis/create", data=body)
    assert missing.status_code == 403 and "Request refused" in missing.text
    wrong = publisher_web.post("/publisher/apis/create", data={**body, "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    header = publisher_web.post(
        "/publisher/apis/create", data=body, headers={"X-CSRF-Token": "nope"}
    )
    assert header.status_code == 403
    assert publisher_web.get(PUBLISHER_REST + "/apis", auth=("admin", "admin")).json()["count"] == 0
    logout = publisher_web.post("/publisher/logout")
    assert logout.status_code == 403


def test_sign_out_ends_the_session_even_for_a_copy_of_the_cookie(
    publisher_web: TestClient,
) -> None:
    page = publisher_web.get("/publisher/apis")
    assert float(page.headers["server-timing"].removeprefix("app;dur=")) < 100
    copied = publisher_web.cookies[COOKIE]
    token = csrf_of(page.text)
    answer = publisher_web.post("/publisher/logout", data={"csrf_token": token})
    assert answer.status_code == 200 and "You have signed out." in answer.text
    assert publisher_web.get("/publisher/apis", follow_redirects=False).status_code == 303
    publisher_web.cookies.clear()
    publisher_web.cookies.set(COOKIE, copied)
    assert publisher_web.get("/publisher/apis", follow_redirects=False).status_code == 303


def test_console_pages_send_security_headers_and_rest_keeps_json(web: TestClient) -> None:
    page = web.get("/publisher/login")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "wss://testserver:9095" in page.headers["content-security-policy"]
    rest = web.get(PUBLISHER_REST + "/apis/nope")
    assert rest.status_code == 401 and rest.json()["code"] == 401
    assert "set-cookie" not in rest.headers
    missing = web.get("/publisher/no/such/page")
    assert missing.status_code == 404 and "There is no such page." in missing.text
    css = web.get("/console/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_pages_load_nothing_from_elsewhere(publisher_web: TestClient) -> None:
    for path in ("/publisher/apis", "/publisher/apis/create", "/publisher/login"):
        page = publisher_web.get(path).text
        assert "http://" not in page and "https://" not in page, path
        assert "<script>" not in page and "style=" not in page


def _create(client: TestClient, **fields: str) -> object:
    token = csrf_of(client.get("/publisher/apis/create").text)
    return client.post("/publisher/apis/create", data={"csrf_token": token, **fields})


def test_create_api_shows_each_error_beside_its_field(publisher_web: TestClient) -> None:
    answer = _create(
        publisher_web, name="Bad<Name>", context="", version="1 0", production_endpoint="http://x"
    )
    assert answer.status_code == 400  # type: ignore[attr-defined]
    errors = field_errors(answer.text)  # type: ignore[attr-defined]
    assert set(errors) == {"name", "context", "version", "production_endpoint"}
    assert "ws:// or wss://" in errors["production_endpoint"]
    assert 'value="Bad&lt;Name&gt;"' in answer.text  # type: ignore[attr-defined]
    none = _create(publisher_web, name="A", context="/a", version="1")
    assert "production or a sandbox endpoint" in field_errors(none.text)["production_endpoint"]  # type: ignore[attr-defined]


def test_create_api_and_a_duplicate_is_an_error_beside_the_name(
    publisher_web: TestClient,
) -> None:
    fields = {
        "name": "EchoWebSocket",
        "context": "/echo",
        "version": "1.0",
        "production_endpoint": "ws://localhost:8765",
        "sandbox_endpoint": "wss://localhost:8766",
    }
    created = _create(publisher_web, **fields)
    assert created.status_code == 200  # type: ignore[attr-defined]
    assert "API EchoWebSocket 1.0 created." in created.text  # type: ignore[attr-defined]
    listed = publisher_web.get(PUBLISHER_REST + "/apis", auth=("admin", "admin")).json()
    assert listed["count"] == 1 and listed["list"][0]["provider"] == "publisher1"
    api = publisher_web.get(
        PUBLISHER_REST + f"/apis/{listed['list'][0]['id']}", auth=("admin", "admin")
    ).json()
    assert api["endpointConfig"]["sandbox_endpoints"]["url"] == "wss://localhost:8766"
    again = _create(publisher_web, **{**fields, "context": "/other"})
    assert again.status_code == 409  # type: ignore[attr-defined]
    assert "already exists" in field_errors(again.text)["name"]  # type: ignore[attr-defined]
    clash = _create(publisher_web, **{**fields, "name": "Other"})
    assert "already exists" in field_errors(clash.text)["context"]  # type: ignore[attr-defined]


def test_api_list_searches_through_the_service(publisher_web: TestClient) -> None:
    for name in ("Chat", "Prices"):
        _create(
            publisher_web,
            name=name,
            context=f"/{name.lower()}",
            version="1",
            production_endpoint="ws://h:1",
        )
    page = publisher_web.get("/publisher/apis", params={"query": "cha"}).text
    assert "Chat" in page and "Prices" not in page
    assert "No API matches" in publisher_web.get("/publisher/apis?query=zzz").text


def test_pages_answer_under_100_ms(publisher_web: TestClient) -> None:
    for i in range(30):
        _create(
            publisher_web,
            name=f"Api{i}",
            context=f"/api{i}",
            version="1",
            production_endpoint="ws://h:1",
        )
    listed = publisher_web.get(PUBLISHER_REST + "/apis", auth=("admin", "admin")).json()
    api = f"/publisher/apis/{listed['list'][0]['id']}"
    pages = ["/publisher/apis", "/publisher/apis/create", "/publisher/apis/import", api]
    pages += [
        f"{api}/{sub}"
        for sub in (
            "topics",
            "endpoints",
            "business-plans",
            "runtime",
            "asyncapi",
            "lifecycle",
            "deployments",
            "subscriptions",
            "download",
        )
    ]
    for path in pages:
        assert publisher_web.get(path).status_code == 200, path  # warm the template cache
        best = min(_timed(publisher_web, path) for _ in range(3))
        assert best < 0.1, f"{path} took {best * 1000:.0f} ms"


def _timed(client: TestClient, path: str) -> float:
    started = time.perf_counter()
    client.get(path)
    return time.perf_counter() - started
