"""The API Manager model on real processes: a control plane and an adapter. Everything the
enforcers need reaches the adapter's xDS (subscription types) after each REST change; the
exported project deploys on the adapter; a control-plane restart loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import any_pb2

from tests.integration.control_plane_flow import control_plane
from tests.procs import PROMPT, Proc, free_port, http_ok, running
from wsgate_common.grpc_tls import GrpcTls, from_pki_dir
from wsgate_common.resources import (
    APPLICATION_TYPE_URL,
    KEY_MANAGER_TYPE_URL,
    KEY_MAPPING_TYPE_URL,
    REVOKED_TOKEN_TYPE_URL,
    ROUTE_TYPE_URL,
    SUBSCRIPTION_TYPE_URL,
    THROTTLE_POLICY_TYPE_URL,
)
from wsgate_common.xds_client import XdsClient
from wsgate_proto import config_pb2, subscription_pb2

pytestmark = pytest.mark.integration

ADMIN = "/api/am/admin/v4"
DEVPORTAL = "/api/am/devportal/v3"
ISSUER = "https://cp.test/oauth2/token"


class Adapter:
    def __init__(self) -> None:
        self.rest, self.xds, self.deploy = free_port(), free_port(), free_port()

    def start(self, data_dir: Path) -> AbstractContextManager[Proc]:
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(self.rest)]
        args += ["--xds-port", str(self.xds), "--deploy-port", str(self.deploy)]
        return running(
            "adapter",
            args,
            {"WSGATE_DATA_DIR": str(data_dir)},
            data_dir,
            lambda: http_ok(f"https://127.0.0.1:{self.rest}/ready"),
        )


class Seen:
    """The subscription resources (and routes) an xDS client of the adapter holds."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {}
        self.changed_at: dict[str, float] = {}

    def handler(self, type_url: str, message: Any) -> Callable[[str, list[any_pb2.Any]], None]:
        def apply(version: str, resources: list[any_pb2.Any]) -> None:
            self.items[type_url] = [message.FromString(r.value) for r in resources]
            self.changed_at[type_url] = time.monotonic()

        return apply

    def handlers(self) -> dict[str, Callable[[str, list[any_pb2.Any]], None]]:
        types = {
            APPLICATION_TYPE_URL: subscription_pb2.Application,
            SUBSCRIPTION_TYPE_URL: subscription_pb2.Subscription,
            KEY_MAPPING_TYPE_URL: subscription_pb2.KeyMapping,
            THROTTLE_POLICY_TYPE_URL: subscription_pb2.ThrottlePolicy,
            KEY_MANAGER_TYPE_URL: subscription_pb2.KeyManager,
            REVOKED_TOKEN_TYPE_URL: subscription_pb2.RevokedToken,
            ROUTE_TYPE_URL: config_pb2.Route,
        }
        return {url: self.handler(url, message) for url, message in types.items()}

    def of(self, type_url: str) -> list[Any]:
        return self.items.get(type_url, [])


def until(check: Callable[[], bool], what: str, limit: float = 10) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - started


@contextlib.contextmanager
def watching(address: str, seen: Seen, tls: GrpcTls) -> Iterator[None]:
    """An xDS client of the adapter on its own thread and loop, filling ``seen``."""
    loop = asyncio.new_event_loop()
    client = XdsClient(address, "Default", seen.handlers(), tls=tls)
    task = loop.create_task(client.run())
    thread = threading.Thread(target=loop.run_forever, name="xds-watch", daemon=True)
    thread.start()
    try:
        until(client.ready.is_set, "the xDS client's first snapshot")
        yield
    finally:
        loop.call_soon_threadsafe(task.cancel)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def apim(tmp_path: Path) -> Iterator[tuple[Adapter, httpx.Client, Proc, Path]]:
    adapter = Adapter()
    with (
        adapter.start(tmp_path / "adapter"),
        control_plane(
            tmp_path / "cp",
            free_port(),
            f"127.0.0.1:{adapter.deploy}",
            WSGATE_CP_USERS="admin:admin,dev:dev",
            WSGATE_CP_TOKEN_ISSUER=ISSUER,
            # Its own data dir, the adapter's certificates for gRPC (mTLS needs one CA).
            WSGATE_GRPC_CA=str(tmp_path / "adapter" / "pki" / "ca.pem"),
            WSGATE_GRPC_CERT=str(tmp_path / "adapter" / "pki" / "server.pem"),
            WSGATE_GRPC_KEY=str(tmp_path / "adapter" / "pki" / "server-key.pem"),
        ) as (proc, client),
    ):
        yield adapter, client, proc, tmp_path


def root(client: httpx.Client) -> str:
    return str(client.base_url).split("/api/")[0]


def test_changes_reach_the_adapters_xds_and_survive_a_restart(
    apim: tuple[Adapter, httpx.Client, Proc, Path],
) -> None:
    adapter, client, cp_proc, tmp_path = apim
    base = root(client)
    ca = ssl.create_default_context(cafile=str(tmp_path / "cp" / "pki" / "ca.pem"))
    dev = httpx.Client(base_url=base, auth=("dev", "dev"), verify=ca, timeout=20)
    seen = Seen()
    tls = from_pki_dir(tmp_path / "adapter" / "pki")
    with watching(f"127.0.0.1:{adapter.xds}", seen, tls), dev:
        # The first sync already carries the tiers and the control plane's key manager.
        until(lambda: len(seen.of(THROTTLE_POLICY_TYPE_URL)) == 16, "default tiers")
        until(lambda: len(seen.of(KEY_MANAGER_TYPE_URL)) == 2, "both key managers")
        # Two issuers, one key: access tokens, and API keys (token_kind "api_key").
        [manager, api_keys] = sorted(seen.of(KEY_MANAGER_TYPE_URL), key=lambda m: m.token_kind)
        assert manager.issuer == ISSUER and list(manager.algorithms) == ["RS256"]
        assert api_keys.issuer == ISSUER + "/apikey" and api_keys.token_kind == "api_key"
        jwks = httpx.get(f"{base}/oauth2/jwks", verify=False).json()
        assert json.loads(manager.jwks_json) == jwks
        assert json.loads(api_keys.jwks_json) == jwks

        body = {
            "name": "Live",
            "context": "/live",
            "version": "1.0",
            "policies": ["AsyncGold"],
            "endpointConfig": {"production_endpoints": {"url": "ws://localhost:8765"}},
        }
        api_id = client.post("/apis", json=body).json()["id"]
        assert (
            client.post(
                "/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}
            ).status_code
            == 200
        )
        revision = client.post(f"/apis/{api_id}/revisions", json={}).json()["id"]
        deployed = client.post(
            f"/apis/{api_id}/deploy-revision",
            params={"revisionId": revision},
            json=[{"name": "Default", "vhost": "localhost"}],
        )
        assert deployed.status_code == 201, deployed.text
        until(lambda: any(r.api_id == api_id for r in seen.of(ROUTE_TYPE_URL)), "route")

        app = dev.post(
            f"{DEVPORTAL}/applications", json={"name": "DevApp", "throttlingPolicy": "20PerMin"}
        )
        assert app.status_code == 201, app.text
        app_id = app.json()["applicationId"]
        sub = dev.post(
            f"{DEVPORTAL}/subscriptions",
            json={"applicationId": app_id, "apiId": api_id, "throttlingPolicy": "AsyncGold"},
        )
        assert sub.status_code == 201, sub.text
        sub_id = sub.json()["subscriptionId"]
        keys = dev.post(
            f"{DEVPORTAL}/applications/{app_id}/generate-keys",
            json={"keyType": "PRODUCTION", "grantTypesToBeSupported": ["client_credentials"]},
        ).json()
        until(
            lambda: (
                [k.consumer_key for k in seen.of(KEY_MAPPING_TYPE_URL)] == [keys["consumerKey"]]
            ),
            "key mapping",
        )
        [application] = seen.of(APPLICATION_TYPE_URL)
        assert (application.id, application.owner, application.tier) == (app_id, "dev", "20PerMin")
        [subscription] = seen.of(SUBSCRIPTION_TYPE_URL)
        assert (subscription.id, subscription.api_id, subscription.state) == (
            sub_id,
            api_id,
            "UNBLOCKED",
        )

        # Block: measure REST answer -> xDS update at a client of the adapter.
        started = time.monotonic()
        blocked = client.post(
            "/subscriptions/block-subscription",
            params={"subscriptionId": sub_id, "blockState": "BLOCKED"},
        )
        answered = time.monotonic()
        assert blocked.status_code == 200
        until(
            lambda: [s.state for s in seen.of(SUBSCRIPTION_TYPE_URL)] == ["BLOCKED"],
            "blocked state",
            limit=PROMPT,
        )
        propagation = seen.changed_at[SUBSCRIPTION_TYPE_URL] - started
        print(
            f"block-subscription: REST call {1000 * (answered - started):.0f} ms, "
            f"visible over xDS {1000 * propagation:.0f} ms after the call started"
        )
        assert propagation < PROMPT

        token = httpx.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(keys["consumerKey"], keys["consumerSecret"]),
            verify=False,
        ).json()["access_token"]
        revoked = httpx.post(
            f"{base}/oauth2/revoke",
            data={"token": token},
            auth=(keys["consumerKey"], keys["consumerSecret"]),
            verify=False,
        )
        assert revoked.status_code == 200
        until(lambda: len(seen.of(REVOKED_TOKEN_TYPE_URL)) == 1, "revoked token", 1.0)

        # Export -> the adapter's own deploy path (apictl / wsgate mg) accepts the project.
        other = dict(body, name="Exported", context="/exported")
        other_id = client.post("/apis", json=other).json()["id"]
        exported = client.get("/apis/export", params={"apiId": other_id})
        assert exported.status_code == 200
        adapter_rest = f"https://127.0.0.1:{adapter.rest}/api/mgw/adapter/0.1/apis"
        files = {"file": ("Exported-1.0.zip", exported.content, "application/zip")}
        taken = httpx.post(adapter_rest, files=files, auth=("admin", "admin"), verify=False)
        assert taken.status_code == 200, taken.text
        until(
            lambda: any(r.api_id == "Exported:1.0" for r in seen.of(ROUTE_TYPE_URL)),
            "exported API deployed by the adapter",
        )

    # A control-plane restart loses nothing: same keys work, same signing key.
    client.close()
    cp_proc.stop()
    assert cp_proc.popen.returncode == 0, cp_proc.log()
    cp_dir = tmp_path / "cp"
    with control_plane(
        cp_dir,
        free_port(),
        f"127.0.0.1:{adapter.deploy}",
        WSGATE_CP_USERS="admin:admin,dev:dev",
        WSGATE_CP_TOKEN_ISSUER=ISSUER,
    ) as (_, again):
        base = root(again)
        assert httpx.get(f"{base}/oauth2/jwks", verify=False).json() == jwks
        subs = again.get("/subscriptions", params={"apiId": api_id}).json()["list"]
        assert [(s["subscriptionId"], s["subscriptionStatus"]) for s in subs] == [
            (sub_id, "BLOCKED")
        ]
        issued = httpx.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(keys["consumerKey"], keys["consumerSecret"]),
            verify=False,
        )
        assert issued.status_code == 200, issued.text
        apps = httpx.get(f"{base}{DEVPORTAL}/applications", auth=("dev", "dev"), verify=False)
        assert [a["name"] for a in apps.json()["list"]] == ["DevApp"]
        policies = again.get(f"{root(again)}{ADMIN}/throttling/policies/subscription")
        assert policies.json()["count"] == 8
