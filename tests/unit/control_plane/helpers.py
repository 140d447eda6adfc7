"""Request bodies, calls and a fake adapter shared by the control-plane unit tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
from fastapi.testclient import TestClient

from wsgate_proto import definition_pb2, deploy_pb2, deploy_pb2_grpc, subscription_pb2

AUTH = ("admin", "admin")
BASE = "/api/am/publisher/v4"
ADMIN = "/api/am/admin/v4"
DEVPORTAL = "/api/am/devportal/v3"


def api_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Echo",
        "context": "/echo",
        "version": "1.0",
        "type": "WS",
        "description": "echoes",
        "endpointConfig": {
            "endpoint_type": "ws",
            "production_endpoints": {"url": "ws://localhost:8765"},
            "sandbox_endpoints": {"url": "wss://sandbox.example:8443/echo"},
        },
        "operations": [
            {"target": "/notifications", "verb": "SUBSCRIBE", "scopes": ["read"]},
            {"target": "/rooms/{room}", "verb": "PUBLISH", "uriMapping": "/r/{room}"},
        ],
        "scopes": [{"scope": {"name": "read", "displayName": "Read", "bindings": ["user"]}}],
        "policies": ["AsyncGold"],
        "apiThrottlingPolicy": "Unlimited",
    }
    body.update(changes)
    return body


class FakeAdapter(deploy_pb2_grpc.DeploymentServiceServicer):
    """Records what the control plane sends and keeps what it would serve (``live``: API id ->
    definitions); answers with ``reject`` when set, after ``delay`` seconds (a slow adapter)."""

    def __init__(self) -> None:
        self.boot_id = "boot-1"
        self.reject: grpc.StatusCode | None = None
        self.delay = 0.0
        #: Refuse real (not validate_only) PutApi calls and every API of a Sync with this.
        self.refuse_changes: grpc.StatusCode | None = None
        self.deployed: list[definition_pb2.ApiDefinition] = []
        self.undeployed: list[deploy_pb2.UndeployRequest] = []
        self.validated: list[deploy_pb2.PutApiRequest] = []
        self.puts: list[deploy_pb2.PutApiRequest] = []
        self.live: dict[str, list[definition_pb2.ApiDefinition]] = {}
        self.syncs: list[list[definition_pb2.ApiDefinition]] = []
        self.subscription_data: list[subscription_pb2.SubscriptionData] = []
        #: Answer PutSubscriptionData with UNIMPLEMENTED, like an adapter that predates it.
        self.unimplemented = False
        self.lock = threading.Lock()

    def Deploy(self, request: Any, context: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        if self.reject is not None:
            context.abort(self.reject, "rejected by the fake adapter")
        with self.lock:
            self.deployed.append(request.api)
        return deploy_pb2.DeployResponse(versions={"Default": "1"})

    def PutApi(self, request: Any, context: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        if self.reject is not None:
            context.abort(self.reject, "rejected by the fake adapter")
        with self.lock:
            if request.validate_only:
                self.validated.append(request)
                return deploy_pb2.PutApiResponse()
        if self.refuse_changes is not None:
            context.abort(self.refuse_changes, "refused by the fake adapter after validation")
        with self.lock:
            self.puts.append(request)
            self.deployed.extend(request.apis)
            if request.apis:
                self.live[request.api_id] = list(request.apis)
            else:
                self.live.pop(request.api_id, None)
        return deploy_pb2.PutApiResponse(versions={"Default": "1"})

    def Undeploy(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.undeployed.append(request)
        return deploy_pb2.UndeployResponse()

    def Sync(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.syncs.append(list(request.apis))
            self.live = {}
            if self.refuse_changes is not None:
                errors = sorted({f"{api.id}: refused by the fake adapter" for api in request.apis})
                return deploy_pb2.SyncResponse(errors=errors)
            for api in request.apis:
                self.live.setdefault(api.id, []).append(api)
        return deploy_pb2.SyncResponse()

    def placements(self, api_id: str) -> set[tuple[str, str]]:
        """(environment, revision id) the fake serves for ``api_id``."""
        with self.lock:
            apis = self.live.get(api_id, [])
            return {(d.name, api.revision_id) for api in apis for d in api.deployments}

    def PutSubscriptionData(self, request: Any, context: Any) -> Any:
        if self.unimplemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        with self.lock:
            self.subscription_data.append(request)
        return deploy_pb2.PutSubscriptionDataResponse(versions={"Default": "1"})

    def latest(self) -> subscription_pb2.SubscriptionData:
        with self.lock:
            return self.subscription_data[-1]

    def Status(self, request: Any, context: Any) -> Any:
        return deploy_pb2.StatusResponse(boot_id=self.boot_id)


def create_api(client: TestClient, **changes: Any) -> dict[str, Any]:
    response = client.post(f"{BASE}/apis", json=api_body(**changes))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def create_revision(client: TestClient, api_id: str, description: str = "") -> dict[str, Any]:
    response = client.post(f"{BASE}/apis/{api_id}/revisions", json={"description": description})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def deploy(
    client: TestClient, api_id: str, revision_id: str, *envs: str, action: str = "deploy"
) -> Any:
    body = [{"name": env, "vhost": "localhost", "displayOnDevportal": True} for env in envs]
    return client.post(
        f"{BASE}/apis/{api_id}/{action}-revision", params={"revisionId": revision_id}, json=body
    )


def add_environment(client: TestClient, name: str, host: str = "localhost") -> dict[str, Any]:
    body = {"name": name, "vhosts": [{"host": host, "wsPort": 9090, "wssPort": 9095}]}
    response = client.post(f"{ADMIN}/environments", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def published_api(client: TestClient, **changes: Any) -> str:
    """An API in state PUBLISHED offering AsyncGold and AsyncBronze; its id."""
    changes.setdefault("policies", ["AsyncGold", "AsyncBronze"])
    api_id = str(create_api(client, **changes)["id"])
    answer = client.post(
        f"{BASE}/apis/change-lifecycle", params={"apiId": api_id, "action": "Publish"}
    )
    assert answer.status_code == 200, answer.text
    return api_id


def create_application(client: TestClient, name: str = "App", **changes: Any) -> dict[str, Any]:
    body = {"name": name, "throttlingPolicy": "Unlimited", "description": "an app", **changes}
    response = client.post(f"{DEVPORTAL}/applications", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def subscribe(client: TestClient, app_id: str, api_id: str, tier: str = "AsyncGold") -> Any:
    body = {"applicationId": app_id, "apiId": api_id, "throttlingPolicy": tier}
    return client.post(f"{DEVPORTAL}/subscriptions", json=body)


def generate_keys(
    client: TestClient, app_id: str, key_type: str = "PRODUCTION", **more: Any
) -> Any:
    body = {"keyType": key_type, "grantTypesToBeSupported": ["client_credentials"], **more}
    return client.post(f"{DEVPORTAL}/applications/{app_id}/generate-keys", json=body)
