"""The Developer Portal console so far: sign-in with the subscriber role, the catalogue."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.control_plane.web.helpers import csrf_of, sign_in

REST = "/api/am/publisher/v4"
ADMIN = ("admin", "admin")


def _api(client: TestClient, name: str, publish: bool) -> None:
    body = {"name": name, "context": f"/{name.lower()}", "version": "1.0"}
    made = client.post(f"{REST}/apis", json=body, auth=ADMIN)
    assert made.status_code == 201, made.text
    if publish:
        params = {"apiId": made.json()["id"], "action": "Publish"}
        published = client.post(f"{REST}/apis/change-lifecycle", params=params, auth=ADMIN)
        assert published.status_code == 200, published.text


def test_devportal_needs_the_subscriber_role_and_lists_published_apis(web: TestClient) -> None:
    _api(web, "Live", publish=True)
    _api(web, "Draft", publish=False)
    assert (
        web.get("/devportal", follow_redirects=False)
        .headers["location"]
        .startswith("/devportal/login")
    )
    page = sign_in(web, "devportal", "dev1", "dev-pass")
    assert page.url.path == "/devportal/apis"
    assert "Live" in page.text and "Draft" not in page.text
    assert "No published API matches" in web.get("/devportal/apis?query=zzz").text
    # signed in once, the session serves both consoles; the publisher still needs its role
    assert web.get("/publisher/apis").status_code == 403
    token = csrf_of(web.get("/devportal/apis").text)
    out = web.post("/devportal/logout", data={"csrf_token": token})
    assert out.url.path == "/devportal/login"
