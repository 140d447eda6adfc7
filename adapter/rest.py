"""The adapter's REST API for the CLI (``wsgate mg``), modelled on Choreo Connect's adapter API.

Base path ``/api/mgw/adapter/0.1``: get a token, deploy a project zip, list and undeploy APIs,
and a status view of snapshots and xDS clients. ``/health`` and ``/ready`` sit at the root.
Every error answers ``{code, message, description}``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials, HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapter.auth import Authenticator, AuthError, decode_basic
from adapter.compile import CompileError
from adapter.deployments import (
    SOURCE_CONTROL_PLANE,
    Conflict,
    Entry,
    NotFound,
    OwnedByControlPlane,
    Registry,
)
from adapter.metrics import AdapterMetrics
from adapter.project import MAX_ZIP_BYTES, ProjectError, load_zip
from adapter.status import current_nacks, label_view
from adapter.xds import XdsStatus
from wsgate_common import api_docs
from wsgate_common.backoff import (
    TOO_MANY_MESSAGE,
    Backoff,
    keys_for,
    log_failure,
    retry_header,
    too_many_description,
)
from wsgate_common.body_limit import BodyLimitMiddleware
from wsgate_common.documents import Budget, DocumentError, load_in_worker
from wsgate_common.errors import ErrorBody
from wsgate_common.metrics import CONTENT_TYPE, render

log = logging.getLogger(__name__)

BASE_PATH = "/api/mgw/adapter/0.1"
INVALID_CREDENTIALS = 900901
MISSING_CREDENTIALS = 900902
TOO_MANY_ATTEMPTS = 429


class ApiError(Exception):
    """An error answer: HTTP status plus the shared error body."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        description: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, description=description)
        self.headers = headers


def _password_ok(request: Request, state: AdapterState, username: str, password: str) -> bool:
    """Check a password behind the per-user and per-address backoff.

    Raises:
        ApiError: 429 while this user or address is held back.
    """
    address = request.client.host if request.client else ""
    keys = keys_for(username, address)
    wait = state.backoff.retry_after(keys)
    if wait > 0:
        raise ApiError(
            429,
            TOO_MANY_ATTEMPTS,
            TOO_MANY_MESSAGE,
            too_many_description(wait),
            {"Retry-After": retry_header(wait)},
        )
    if state.auth.check_password(username, password):
        state.backoff.succeeded(keys[:1])
        return True
    log_failure(log, username, address, state.backoff.failed(keys))
    return False


@dataclass
class AdapterState:
    """What the HTTP handlers need from the running adapter."""

    registry: Registry
    auth: Authenticator
    xds_status: XdsStatus
    boot_id: str
    ready: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: AdapterMetrics | None = None
    #: What one project file may cost to read (``WSGATE_ADAPTER_DOCUMENT_*``).
    budget: Budget = field(default_factory=Budget)
    #: Held-back sign-ins after wrong passwords (``WSGATE_AUTH_BACKOFF_*``).
    backoff: Backoff = field(default_factory=Backoff)

    def timed(self, op: str) -> contextlib.AbstractContextManager[None]:
        return self.metrics.timed(op) if self.metrics is not None else contextlib.nullcontext()


class TokenRequest(BaseModel):
    username: str
    password: str


class TokenResponse(BaseModel):
    accessToken: str


class DeployResult(BaseModel):
    message: str
    id: str
    apiName: str
    version: str
    environments: dict[str, str] = Field(description="gateway label -> new snapshot version")


class UndeployResult(BaseModel):
    message: str
    removed: list[str]
    environments: dict[str, str]


class ApiRow(BaseModel):
    model_config = {"populate_by_name": True}

    apiName: str
    version: str
    apiType: str
    context: str
    gateway_envs: list[str] = Field(alias="gateway-envs")
    vhost: str
    id: str
    source: str


class ApiList(BaseModel):
    total: int
    count: int
    list: list[ApiRow]


_basic = HTTPBasic(auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def _state(request: Request) -> AdapterState:
    state: AdapterState = request.app.state.adapter
    return state


def require_user(
    request: Request,
    _basic_creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    _bearer_creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """HTTP Basic (a configured user) or Bearer (a token from /oauth2/token)."""
    state = _state(request)
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    try:
        if scheme.lower() == "basic" and value.strip():
            username, password = decode_basic(value.strip())
            if _password_ok(request, state, username, password):
                return username
            raise AuthError("invalid user name or password")
        return state.auth.authenticate(header or None)
    except AuthError as exc:
        if exc.missing:
            raise ApiError(401, MISSING_CREDENTIALS, "Missing credentials", str(exc)) from None
        raise ApiError(401, INVALID_CREDENTIALS, "Invalid credentials", str(exc)) from None


User = Annotated[str, Depends(require_user)]


def _matches(entry: Entry, vhost: str, labels: list[str], terms: list[str]) -> bool:
    route = entry.compiled[labels[0]].route
    values = {
        "name": entry.api.name,
        "version": entry.api.version,
        "type": "ws",
        "context": route.base_path,
        "vhost": vhost,
        "id": entry.api.id,
        "source": entry.source,
    }
    for term in terms:
        key, sep, value = term.partition(":")
        if not sep:
            if term.lower() not in entry.api.name.lower():
                return False
        elif key in ("env", "label", "gateway-env"):
            if value not in labels:
                return False
        elif key not in values or value.lower() not in values[key].lower():
            return False
    return True


def rows(registry: Registry, query: str = "") -> list[ApiRow]:
    """One row per API and vhost (labels on that vhost grouped), filtered by ``query`` terms."""
    terms = query.split()
    result = []
    for entry in registry.entries():
        by_vhost: dict[str, list[str]] = {}
        for label, res in sorted(entry.compiled.items()):
            by_vhost.setdefault(res.route.vhost, []).append(label)
        for vhost, labels in sorted(by_vhost.items()):
            if not _matches(entry, vhost, labels, terms):
                continue
            result.append(
                ApiRow.model_validate(
                    {
                        "apiName": entry.api.name,
                        "version": entry.api.version,
                        "apiType": "WS",
                        "context": entry.compiled[labels[0]].route.base_path,
                        "gateway-envs": labels,
                        "vhost": vhost,
                        "id": entry.api.id,
                        "source": entry.source,
                    }
                )
            )
    return result


router = APIRouter(prefix=BASE_PATH)
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
}


@router.post("/oauth2/token", response_model=TokenResponse, responses=_ERRORS, tags=["auth"])
async def token(request: Request, body: TokenRequest | None = None) -> TokenResponse:
    """Exchange a user name and password (JSON body or Basic header) for a 1-hour token."""
    state = _state(request)
    auth = state.auth
    if body is None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value.strip():
            raise ApiError(
                401, MISSING_CREDENTIALS, "Missing credentials", "send username/password"
            )
        try:
            username, password = decode_basic(value.strip())
        except AuthError as exc:
            raise ApiError(401, INVALID_CREDENTIALS, "Invalid credentials", str(exc)) from None
    else:
        username, password = body.username, body.password
    if not _password_ok(request, state, username, password):
        raise ApiError(401, INVALID_CREDENTIALS, "Invalid credentials", "wrong user or password")
    return TokenResponse(accessToken=auth.issue(username))


def _owned(exc: OwnedByControlPlane) -> ApiError:
    return ApiError(409, 409, "API owned by the control plane", f"{exc}; {exc.hint}")


@router.post("/apis", response_model=DeployResult, responses=_ERRORS, tags=["apis"])
async def deploy(
    request: Request,
    user: User,
    file: Annotated[UploadFile, File(description="the API project as a zip")],
    override: Annotated[bool, Query(description="replace an API deployed earlier")] = False,
) -> DeployResult:
    """Deploy a WSO2 API project (zip) on the gateway labels it lists (default: Default)."""
    state = _state(request)
    data = await file.read(MAX_ZIP_BYTES + 1)
    source = file.filename or "project.zip"
    try:
        # in a worker process: the xDS streams and /health keep being served meanwhile
        api = await load_in_worker(load_zip, data, source, state.budget, budget=state.budget)
        with state.timed("deploy"):
            versions = state.registry.deploy(api, override=override)
    except DocumentError as exc:
        raise ApiError(413, 413, "API project too large", f"{source}: {exc.message}") from None
    except ProjectError as exc:
        if exc.too_large:
            raise ApiError(
                413,
                413,
                "API project too large",
                f"{exc}; see WSGATE_ADAPTER_DOCUMENT_MAX_NODES / _TIMEOUT",
            ) from None
        raise ApiError(400, 400, "Invalid API project", str(exc)) from None
    except CompileError as exc:
        raise ApiError(400, 400, "Invalid API definition", str(exc)) from None
    except OwnedByControlPlane as exc:
        raise _owned(exc) from None
    except Conflict as exc:
        raise ApiError(409, 409, "API already exists", str(exc)) from None
    log.info("%s deployed %s (%s %s) on %s", user, api.id, api.name, api.version, versions)
    return DeployResult(
        message="API deployed",
        id=api.id,
        apiName=api.name,
        version=api.version,
        environments=versions,
    )


@router.delete("/apis", response_model=UndeployResult, responses=_ERRORS, tags=["apis"])
async def undeploy(
    request: Request,
    user: User,
    api_name: Annotated[str, Query(alias="apiName")],
    version: str,
    vhost: str = "",
) -> UndeployResult:
    """Undeploy an API by name and version, from every label or only those on ``vhost``."""
    registry = _state(request).registry
    found = registry.find(api_name, version, vhost)
    if not found:
        raise ApiError(
            404,
            404,
            "API not found",
            f"no API {api_name} {version} is deployed" + (f" on vhost {vhost}" if vhost else ""),
        )
    for entry in found:
        if entry.source == SOURCE_CONTROL_PLANE:
            raise _owned(OwnedByControlPlane(entry.api, "undeploy"))
    versions: dict[str, str] = {}
    for entry in found:
        labels = registry.labels_on_vhost(entry, vhost) if vhost else []
        try:
            with _state(request).timed("undeploy"):
                versions.update(registry.undeploy(entry.api.id, labels))
        except NotFound as exc:
            raise ApiError(404, 404, "API not found", str(exc)) from None
    log.info("%s undeployed %s: %s", user, [e.api.id for e in found], versions)
    return UndeployResult(
        message="API undeployed", removed=[e.api.id for e in found], environments=versions
    )


@router.get("/apis", response_model=ApiList, responses=_ERRORS, tags=["apis"])
async def list_apis(
    request: Request,
    user: User,
    query: Annotated[str, Query(description="e.g. 'name:Echo version:1.0.0 env:Default'")] = "",
    limit: Annotated[int, Query(ge=0, le=10_000)] = 1000,
) -> ApiList:
    """Every deployed API (from the CLI and from the control plane)."""
    found = rows(_state(request).registry, query)
    shown = found[:limit]
    return ApiList(total=len(found), count=len(shown), list=shown)


@router.get("/status", responses=_ERRORS, tags=["status"])
async def status(request: Request, user: User) -> dict[str, Any]:
    """Snapshot versions per label, subscription data item counts, connected xDS clients, and
    the NACKs: ``labels`` holds, per label and type URL, the version served and each connected
    client's last ACKed version and last NACK; ``nackedCurrent`` lists the clients whose last
    NACK refused the version served now (a later good snapshot they ACK clears it)."""
    state = _state(request)
    versions = state.registry.cache.versions()
    view = label_view(versions, state.xds_status)
    return {
        "bootId": state.boot_id,
        "snapshots": versions,
        "subscriptionData": state.registry.subscription_counts(),
        "labels": view,
        "nackedCurrent": current_nacks(view),
        "xds": state.xds_status.as_dict(),
    }


def create_app(state: AdapterState) -> FastAPI:
    app = FastAPI(
        title="wsgate adapter",
        version="0.1",
        description="Deploy WSO2 API projects to wsgate's gateway labels (apictl mg style).",
        docs_url=None,  # served by api_docs without a CDN
        redoc_url=None,
    )
    app.state.adapter = state
    app.include_router(router)
    api_docs.install(app)
    # a project zip and its multipart envelope; anything larger is refused unread
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_ZIP_BYTES + 1024 * 1024,
        setting=f"a project zip may be {MAX_ZIP_BYTES} bytes",
    )

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition (no authentication, like /health)."""
        if state.metrics is None:
            return Response(b"", media_type=CONTENT_TYPE)
        return Response(render(state.metrics.registry), media_type=CONTENT_TYPE)

    @app.get("/ready", tags=["health"], responses={503: {"model": ErrorBody}})
    async def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"code": 503, "message": "Not ready", "description": ""}, 503)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="wsgate"'
        return JSONResponse(exc.body.model_dump(), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        body = ErrorBody(code=400, message="Invalid request", description=details)
        return JSONResponse(body.model_dump(), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(code=exc.status_code, message=str(exc.detail), description="")
        return JSONResponse(body.model_dump(), exc.status_code)

    return app
