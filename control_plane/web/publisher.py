"""The Publisher console (``/publisher``): pages over the publisher service layer.

Every page calls ``control_plane.services.*`` exactly as its REST twin in
``control_plane/routers`` does, so a page and ``/api/am/publisher/v4`` cannot disagree.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from control_plane import asyncapi, export
from control_plane.dependencies import AdapterGateway, DbSession
from control_plane.errors import ApiError
from control_plane.models import Api
from control_plane.push import Gateway
from control_plane.routers import transfer
from control_plane.schemas import ApiBody, DeploymentTarget
from control_plane.services import apis as api_service
from control_plane.services import deployments, environments, lifecycle, policies, subscriptions
from control_plane.web import forms
from control_plane.web.core import Csrf, Page, PublisherPage, render
from wsgate_common.documents import DEFAULT_BUDGET, Budget, DocumentError, load_in_worker_sync

router = APIRouter(
    prefix="/publisher", include_in_schema=False, default_response_class=HTMLResponse
)

PAGE_SIZE = 25
Text = Annotated[str, Form(max_length=2048)]

#: Model location -> form field of the Create API form.
CREATE_FIELDS = {
    "name": "name",
    "context": "context",
    "version": "version",
    "description": "description",
    "endpointConfig.production_endpoints": "production_endpoint",
    "endpointConfig.sandbox_endpoints": "sandbox_endpoint",
    "endpointConfig": "production_endpoint",
}


def endpoint_config(production: str, sandbox: str) -> dict[str, Any] | None:
    """The WSO2 ``endpointConfig`` of a WebSocket API from the two form fields."""
    config: dict[str, Any] = {"endpoint_type": "ws"}
    if production.strip():
        config["production_endpoints"] = {"url": production.strip()}
    if sandbox.strip():
        config["sandbox_endpoints"] = {"url": sandbox.strip()}
    return config if len(config) > 1 else None


def api_nav(api: Api) -> list[tuple[str, str]]:
    """The left-hand menu of one API's pages (WSO2 4.x names)."""
    base = f"/apis/{api.id}"
    return [
        ("Overview", base),
        ("Topics", f"{base}/topics"),
        ("Endpoints", f"{base}/endpoints"),
        ("Business Plans", f"{base}/business-plans"),
        ("Runtime", f"{base}/runtime"),
        ("AsyncAPI Definition", f"{base}/asyncapi"),
        ("Lifecycle", f"{base}/lifecycle"),
        ("Deployments", f"{base}/deployments"),
        ("Subscriptions", f"{base}/subscriptions"),
    ]


def render_api(
    page: Page, api: Api, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """A page of one API, with its menu and its current definition."""
    body = ApiBody.model_validate(api.definition)
    merged = {"api": api, "body": body, "api_nav": api_nav(api)} | (context or {})
    return render(page, template, merged, status)


@router.get("")
def home(page: PublisherPage) -> Response:
    return page.redirect("/apis")


@router.get("/apis")
def list_apis(
    page: PublisherPage,
    session: DbSession,
    query: Annotated[str, Query(max_length=500)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    found, total = api_service.search(session, query, PAGE_SIZE, offset)
    return render(
        page,
        "publisher/apis.html",
        {"apis": found, "total": total, "query": query, "offset": offset, "size": PAGE_SIZE},
    )


def _create_form(
    page: PublisherPage, values: dict[str, str], errors: forms.FieldErrors, status: int = 200
) -> HTMLResponse:
    return render(page, "publisher/create.html", {"values": values, "errors": errors}, status)


@router.get("/apis/create")
def create_form(page: PublisherPage) -> HTMLResponse:
    return _create_form(page, {"version": "1.0.0"}, {})


@router.post("/apis/create", dependencies=[Csrf])
def create_api(
    page: PublisherPage,
    session: DbSession,
    name: Text = "",
    context: Text = "",
    version: Text = "",
    description: Text = "",
    production_endpoint: Text = "",
    sandbox_endpoint: Text = "",
) -> Response:
    values = {
        "name": name,
        "context": context,
        "version": version,
        "description": description,
        "production_endpoint": production_endpoint,
        "sandbox_endpoint": sandbox_endpoint,
    }
    document: dict[str, Any] = {
        "name": name,
        "context": context,
        "version": version,
        "type": "WS",
        "description": description or None,
        "endpointConfig": endpoint_config(production_endpoint, sandbox_endpoint),
    }
    errors: forms.FieldErrors = {}
    if not production_endpoint.strip() and not sandbox_endpoint.strip():
        errors["production_endpoint"] = [
            "Give a production or a sandbox endpoint (ws:// or wss://)."
        ]
    try:
        body = ApiBody.model_validate(document)
    except ValidationError as exc:
        errors = forms.merge(forms.from_validation(exc, CREATE_FIELDS), errors)
    if errors:
        return _create_form(page, values, errors, status=400)
    try:
        api = api_service.create(session, body, page.user)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return _create_form(
            page, values, forms.from_description(exc.description, CREATE_FIELDS), exc.status
        )
    return page.redirect(f"/apis/{api.id}", f"API {api.name} {api.version} created.", "success")


def overview(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    body = ApiBody.model_validate(api.definition)
    deployed = deployments.list_revisions(session, api_id, True)
    config = body.endpoint_config
    base = f"/apis/{api.id}"
    steps = [  # WSO2's "Develop - Deploy - Publish" checklist
        (
            "Endpoints",
            bool(config and (config.production_endpoints or config.sandbox_endpoints)),
            f"{base}/endpoints",
        ),
        ("Topics", bool(body.operations), f"{base}/topics"),
        ("Business plans", bool(body.policies), f"{base}/business-plans"),
        ("Deployed", bool(deployed), f"{base}/deployments"),
        ("Published", api.lifecycle_status == "PUBLISHED", f"{base}/lifecycle"),
    ]
    return render_api(page, api, "publisher/overview.html", {"steps": steps})


# --- editing the working copy ----------------------------------------------------------------


def save_definition(
    session: DbSession, api: Api, document: dict[str, Any], fields: dict[str, str]
) -> forms.FieldErrors:
    """Validate ``document`` and make it the API's working copy (``services.apis.update``, as
    ``PUT /apis/{id}``); the errors per form field, empty when saved."""
    try:
        body = ApiBody.model_validate(document)
    except ValidationError as exc:
        session.rollback()
        return forms.from_validation(exc, fields)
    try:
        api_service.update(session, str(api.id), body)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        session.rollback()
        return forms.from_description(exc.description, fields)
    return {}


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (role bindings, scopes typed as text)."""
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


# --- topics and scopes -------------------------------------------------------------------------

TOPIC_FIELDS = {"operations": "target", "scopes": "scope_name"}
VERB_CHOICES = [
    ("PUBLISH", "PUBLISH"),
    ("SUBSCRIBE", "SUBSCRIBE"),
    ("BOTH", "PUBLISH and SUBSCRIBE"),
]
AUTH_TYPES = [("Any", "Any (OAuth2 token required)"), ("None", "None (no token needed)")]


def _topics_page(
    page: Page,
    api: Api,
    errors: forms.FieldErrors | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render_api(
        page,
        api,
        "publisher/topics.html",
        {
            "section": "Topics",
            "errors": errors or {},
            "values": values or {"verb": "BOTH", "auth_type": "Any"},
            "verbs": VERB_CHOICES,
            "auth_types": AUTH_TYPES,
        },
        status,
    )


@router.get("/apis/{api_id}/topics")
def topics(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    return _topics_page(page, api_service.load(session, api_id))


def _operation(
    target: str, verb: str, auth_type: str, scopes: list[str], mapping: str
) -> dict[str, Any]:
    return {
        "target": target,
        "verb": verb,
        "authType": auth_type or "Any",
        "scopes": scopes,
        "uriMapping": mapping.strip() or None,
    }


@router.post("/apis/{api_id}/topics", dependencies=[Csrf])
def add_topic(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    target: Text = "",
    verb: Text = "BOTH",
    auth_type: Text = "Any",
    uri_mapping: Text = "",
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Add a topic (in one or both directions), as the Topics page of WSO2 4.x does."""
    api = api_service.load(session, api_id)
    values = {
        "target": target,
        "verb": verb,
        "auth_type": auth_type,
        "uri_mapping": uri_mapping,
        "scopes": scopes or [],
    }
    if not target.strip():
        return _topics_page(
            page, api, {"target": ["Give the topic, e.g. /notifications."]}, values, 400
        )
    document = dict(api.definition)
    verbs = ["PUBLISH", "SUBSCRIBE"] if verb == "BOTH" else [verb]
    added = [_operation(target, v, auth_type, scopes or [], uri_mapping) for v in verbs]
    document["operations"] = [*document.get("operations", []), *added]
    errors = save_definition(session, api, document, TOPIC_FIELDS)
    if errors:
        return _topics_page(page, api, errors, values, 400)
    return page.redirect(f"/apis/{api.id}/topics", f"Topic {target.strip()} added.", "success")


@router.post("/apis/{api_id}/topics/update", dependencies=[Csrf])
def update_topic(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    index: Annotated[int, Form(ge=0)],
    auth_type: Text = "Any",
    uri_mapping: Text = "",
    scopes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    api = api_service.load(session, api_id)
    document = dict(api.definition)
    operations = [dict(op) for op in document.get("operations", [])]
    if index >= len(operations):
        return page.redirect(f"/apis/{api.id}/topics", "That topic no longer exists.", "error")
    operations[index].update(
        authType=auth_type or "Any", scopes=scopes or [], uriMapping=uri_mapping.strip() or None
    )
    document["operations"] = operations
    errors = save_definition(session, api, document, TOPIC_FIELDS)
    if errors:
        return _topics_page(page, api, errors, None, 400)
    op = operations[index]
    return page.redirect(
        f"/apis/{api.id}/topics", f"Topic {op['verb']} {op['target']} saved.", "success"
    )


@router.post("/apis/{api_id}/topics/remove", dependencies=[Csrf])
def remove_topic(
    page: PublisherPage, session: DbSession, api_id: str, index: Annotated[int, Form(ge=0)]
) -> Response:
    api = api_service.load(session, api_id)
    document = dict(api.definition)
    operations = list(document.get("operations", []))
    if index >= len(operations):
        return page.redirect(f"/apis/{api.id}/topics", "That topic no longer exists.", "error")
    removed = operations.pop(index)
    document["operations"] = operations
    errors = save_definition(session, api, document, TOPIC_FIELDS)
    if errors:
        return _topics_page(page, api, errors, None, 400)
    return page.redirect(
        f"/apis/{api.id}/topics", f"Topic {removed['verb']} {removed['target']} removed.", "success"
    )


@router.post("/apis/{api_id}/scopes", dependencies=[Csrf])
def add_scope(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    scope_name: Text = "",
    scope_display_name: Text = "",
    scope_description: Text = "",
    scope_roles: Text = "",
) -> Response:
    """Declare a scope with its role bindings (WSO2's "Local Scopes")."""
    api = api_service.load(session, api_id)
    values = {
        "scope_name": scope_name,
        "scope_display_name": scope_display_name,
        "scope_description": scope_description,
        "scope_roles": scope_roles,
    }
    document = dict(api.definition)
    scope = {
        "scope": {
            "name": scope_name.strip(),
            "displayName": scope_display_name.strip() or scope_name.strip(),
            "description": scope_description.strip(),
            "bindings": split_list(scope_roles),
        },
        "shared": False,
    }
    if any(item["scope"]["name"] == scope_name.strip() for item in document.get("scopes", [])):
        errors = {"scope_name": [f"Scope {scope_name.strip()} is already declared."]}
        return _topics_page(page, api, errors, values, 409)
    document["scopes"] = [*document.get("scopes", []), scope]
    fields = {"scopes": "scope_name", "operations": "scope_name"}
    errors = save_definition(session, api, document, fields)
    if errors:
        return _topics_page(page, api, errors, values, 400)
    return page.redirect(f"/apis/{api.id}/topics", f"Scope {scope_name.strip()} added.", "success")


@router.post("/apis/{api_id}/scopes/remove", dependencies=[Csrf])
def remove_scope(
    page: PublisherPage, session: DbSession, api_id: str, scope_name: Text = ""
) -> Response:
    api = api_service.load(session, api_id)
    document = dict(api.definition)
    users = [
        f"{op['verb']} {op['target']}"
        for op in document.get("operations", [])
        if scope_name in op.get("scopes", [])
    ]
    if users:
        message = f"Scope {scope_name} is used by {', '.join(users)}; remove it there first."
        return page.redirect(f"/apis/{api.id}/topics", message, "error")
    document["scopes"] = [s for s in document.get("scopes", []) if s["scope"]["name"] != scope_name]
    errors = save_definition(session, api, document, {"scopes": "scope_name"})
    if errors:
        return _topics_page(page, api, errors, None, 400)
    return page.redirect(f"/apis/{api.id}/topics", f"Scope {scope_name} removed.", "success")


# --- endpoints, business plans, runtime ---------------------------------------------------------

ENDPOINT_FIELDS = {
    "endpointConfig.production_endpoints": "production_endpoint",
    "endpointConfig.sandbox_endpoints": "sandbox_endpoint",
    "endpointConfig": "production_endpoint",
}


@router.get("/apis/{api_id}/endpoints")
def endpoints(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    config = ApiBody.model_validate(api.definition).endpoint_config
    values = {
        "production_endpoint": config.production_endpoints.url
        if config and config.production_endpoints
        else "",
        "sandbox_endpoint": config.sandbox_endpoints.url
        if config and config.sandbox_endpoints
        else "",
    }
    context = {"section": "Endpoints", "values": values, "errors": {}}
    return render_api(page, api, "publisher/endpoints.html", context)


@router.post("/apis/{api_id}/endpoints", dependencies=[Csrf])
def save_endpoints(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    production_endpoint: Text = "",
    sandbox_endpoint: Text = "",
) -> Response:
    api = api_service.load(session, api_id)
    values = {"production_endpoint": production_endpoint, "sandbox_endpoint": sandbox_endpoint}
    errors: forms.FieldErrors = {}
    if not production_endpoint.strip() and not sandbox_endpoint.strip():
        errors = {
            "production_endpoint": ["Give a production or a sandbox endpoint (ws:// or wss://)."]
        }
    else:
        document = dict(api.definition)
        document["endpointConfig"] = endpoint_config(production_endpoint, sandbox_endpoint)
        errors = save_definition(session, api, document, ENDPOINT_FIELDS)
    if errors:
        context = {"section": "Endpoints", "values": values, "errors": errors}
        return render_api(page, api, "publisher/endpoints.html", context, 400)
    return page.redirect(f"/apis/{api.id}/endpoints", "Endpoints saved.", "success")


def _plans_page(
    page: Page,
    session: DbSession,
    api: Api,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = {
        "section": "Business Plans",
        "tiers": policies.list_policies(session, "subscription"),
        "errors": errors or {},
        "can_publish": "Publish" in lifecycle.TRANSITIONS.get(api.lifecycle_status, {}),
    }
    return render_api(page, api, "publisher/business_plans.html", context, status)


@router.get("/apis/{api_id}/business-plans")
def business_plans(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    return _plans_page(page, session, api_service.load(session, api_id))


@router.post("/apis/{api_id}/business-plans", dependencies=[Csrf])
def save_business_plans(
    page: PublisherPage,
    session: DbSession,
    gateway: AdapterGateway,
    api_id: str,
    tiers: Annotated[list[str] | None, Form()] = None,
    publish: Text = "",
) -> Response:
    """Save the subscription tiers; "Save and Publish" also publishes, as in the seed."""
    api = api_service.load(session, api_id)
    if not tiers:
        return _plans_page(
            page, session, api, {"tiers": ["Select at least one business plan."]}, 400
        )
    document = dict(api.definition)
    document["policies"] = tiers
    errors = save_definition(session, api, document, {"policies": "tiers"})
    if errors:
        return _plans_page(page, session, api, errors, 400)
    if publish:
        api = lifecycle.change(session, str(api.id), "Publish", gateway)
        return page.redirect(
            f"/apis/{api.id}/lifecycle",
            f"Business plans saved; API is {api.lifecycle_status}.",
            "success",
        )
    return page.redirect(f"/apis/{api.id}/business-plans", "Business plans saved.", "success")


@router.get("/apis/{api_id}/runtime")
def runtime(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    return _runtime_page(page, session, api)


def _runtime_page(
    page: Page,
    session: DbSession,
    api: Api,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    body = ApiBody.model_validate(api.definition)
    secured = [op.auth_type.strip().lower() != "none" for op in body.operations]
    context = {
        "section": "Runtime",
        "rate_limits": [("", "Unlimited (none set)")]
        + [(p.name, f"{p.name} — {p.description}") for p in policies.list_policies(session, "api")],
        "security_on": all(secured) if secured else True,
        "security_mixed": any(secured) and not all(secured),
        "errors": errors or {},
    }
    return render_api(page, api, "publisher/runtime.html", context, status)


@router.post("/apis/{api_id}/runtime", dependencies=[Csrf])
def save_runtime(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    security: Text = "",
    api_rate_limit: Text = "",
) -> Response:
    """Security on/off sets every topic's auth type (Any / None); the API-level rate limit is
    the API's ``apiThrottlingPolicy``."""
    api = api_service.load(session, api_id)
    document = dict(api.definition)
    auth = "Any" if security else "None"
    document["operations"] = [{**op, "authType": auth} for op in document.get("operations", [])]
    document["apiThrottlingPolicy"] = api_rate_limit or None
    errors = save_definition(session, api, document, {"apiThrottlingPolicy": "api_rate_limit"})
    if errors:
        return _runtime_page(page, session, api, errors, 400)
    return page.redirect(f"/apis/{api.id}/runtime", "Runtime configuration saved.", "success")


# --- lifecycle ----------------------------------------------------------------------------------


@router.get("/apis/{api_id}/lifecycle")
def lifecycle_page(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    context = {"section": "Lifecycle", "state": lifecycle.state_of(api)}
    return render_api(page, api, "publisher/lifecycle.html", context)


@router.post("/apis/{api_id}/lifecycle", dependencies=[Csrf])
def change_lifecycle(
    page: PublisherPage, session: DbSession, gateway: AdapterGateway, api_id: str, action: Text = ""
) -> Response:
    try:
        api = lifecycle.change(session, api_id, action, gateway)
    except ApiError as exc:
        if exc.status not in (400, 409):
            raise
        return page.redirect(f"/apis/{api_id}/lifecycle", exc.description, "error")
    message = f"{action}: the API is now {api.lifecycle_status}." + adapter_note(page)
    return page.redirect(f"/apis/{api.id}/lifecycle", message, "success")


# --- revisions and deployments ------------------------------------------------------------------


def _deployments_page(
    page: Page,
    session: DbSession,
    api: Api,
    gateway: Gateway,
    errors: forms.FieldErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    revisions = deployments.list_revisions(session, str(api.id), False)
    envs = environments.list_environments(session)
    # DEPLOYED / PENDING exactly as the REST API's deploymentInfo says it
    live = gateway.live(str(api.id))
    states = {
        row.id: deployments.deployment_info(row, live).deployment_status
        for revision in revisions
        for row in revision.deployments
    }
    context = {
        "section": "Deployments",
        "revisions": revisions,
        "states": states,
        "environments": envs,
        "max_revisions": deployments.MAX_REVISIONS,
        "errors": errors or {},
    }
    return render_api(page, api, "publisher/deployments.html", context, status)


@router.get("/apis/{api_id}/deployments")
def deployments_page(
    page: PublisherPage, session: DbSession, gateway: AdapterGateway, api_id: str
) -> HTMLResponse:
    return _deployments_page(page, session, api_service.load(session, api_id), gateway)


def _revision_action(page: Page, api_id: str, action: Callable[[], str]) -> Response:
    """Run a revision service call (it returns what to tell the user); a refusal (4xx, or the
    adapter unreachable) is shown on the Deployments page."""
    try:
        done = action()
    except ApiError as exc:
        if exc.status >= 500 and exc.status not in (502, 503, 504):
            raise
        return page.redirect(f"/apis/{api_id}/deployments", exc.description, "error")
    return page.redirect(f"/apis/{api_id}/deployments", done, "success")


def adapter_note(page: Page) -> str:
    """What to add to a success message when the adapter cannot be reached right now (the
    change is saved and the adapter gets it by re-sync when it is back, as for the REST API)."""
    sync = getattr(page.request.app.state, "sync", None)
    if sync is not None and sync.reachable is False:
        return " The adapter is unreachable now: gateways get it once the adapter is back."
    return ""


def _done(_: object, message: str) -> str:
    return message


def _target(environment: str, vhost: str) -> DeploymentTarget:
    """The environment a Deploy/Undeploy button names; 400 when it is not a valid name."""
    try:
        return DeploymentTarget(name=environment or "Default", vhost=vhost or "localhost")
    except ValidationError:
        raise ApiError(400, f"environment {environment!r} is not a valid gateway name") from None


@router.post("/apis/{api_id}/revisions", dependencies=[Csrf])
def create_revision(
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    description: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    def act() -> str:
        revision = deployments.create_revision(session, api_id, description)
        return f"Revision {revision.number} created."

    return _revision_action(page, api_id, act)


@router.post("/apis/{api_id}/deploy", dependencies=[Csrf])
def deploy_revision(
    page: PublisherPage,
    session: DbSession,
    gateway: AdapterGateway,
    api_id: str,
    revision_id: Text = "",
    environment: Text = "",
    vhost: Text = "",
) -> Response:
    def act() -> str:
        target = _target(environment, vhost)
        deployments.deploy(session, api_id, revision_id, [target], gateway)
        return f"Deployed to {target.name}." + adapter_note(page)

    return _revision_action(page, api_id, act)


@router.post("/apis/{api_id}/undeploy", dependencies=[Csrf])
def undeploy_revision(
    page: PublisherPage,
    session: DbSession,
    gateway: AdapterGateway,
    api_id: str,
    revision_id: Text = "",
    environment: Text = "",
    vhost: Text = "",
) -> Response:
    def act() -> str:
        target = _target(environment, vhost)
        deployments.undeploy(session, api_id, revision_id, [target], gateway)
        return f"Undeployed from {target.name}."

    return _revision_action(page, api_id, act)


@router.post("/apis/{api_id}/restore", dependencies=[Csrf])
def restore_revision(
    page: PublisherPage, session: DbSession, api_id: str, revision_id: Text = ""
) -> Response:
    return _revision_action(
        page,
        api_id,
        lambda: _done(
            deployments.restore(session, api_id, revision_id),
            "Revision restored as the working copy; create and deploy a revision to take it to"
            " gateways.",
        ),
    )


@router.post("/apis/{api_id}/revisions/delete", dependencies=[Csrf])
def delete_revision(
    page: PublisherPage, session: DbSession, api_id: str, revision_id: Text = ""
) -> Response:
    def act() -> str:
        deployments.delete_revision(session, api_id, revision_id)
        return "Revision deleted."

    return _revision_action(page, api_id, act)


# --- subscriptions ------------------------------------------------------------------------------

BLOCK_ACTIONS = {
    "block": "BLOCKED",
    "block-production": "PROD_ONLY_BLOCKED",
    "unblock": "UNBLOCKED",
}


@router.get("/apis/{api_id}/subscriptions")
def subscriptions_page(
    page: PublisherPage, session: DbSession, api_id: str, offset: Annotated[int, Query(ge=0)] = 0
) -> HTMLResponse:
    api = api_service.load(session, api_id)
    rows, total = subscriptions.list_for_api(session, api_id, 100, offset)
    context = {"section": "Subscriptions", "subscriptions": rows, "total": total}
    return render_api(page, api, "publisher/subscriptions.html", context)


@router.post("/apis/{api_id}/subscriptions", dependencies=[Csrf])
def block_subscription(
    page: PublisherPage,
    session: DbSession,
    gateway: AdapterGateway,
    api_id: str,
    subscription_id: Text = "",
    action: Text = "",
) -> Response:
    state = BLOCK_ACTIONS.get(action)
    if state is None:
        return page.redirect(
            f"/apis/{api_id}/subscriptions", f"Unknown action {action!r}.", "error"
        )
    sub = subscriptions.load_any(session, subscription_id)
    if str(sub.api_id) != str(api_service.load(session, api_id).id):
        return page.redirect(
            f"/apis/{api_id}/subscriptions", "Not a subscription of this API.", "error"
        )
    sub = subscriptions.set_state(session, subscription_id, state, gateway)
    message = f"Subscription of {sub.application.name} is now {sub.state}."
    return page.redirect(f"/apis/{api_id}/subscriptions", message, "success")


# --- download, import, AsyncAPI definition ------------------------------------------------------


@router.get("/apis/{api_id}/download")
def download_api(page: PublisherPage, session: DbSession, api_id: str) -> Response:
    """The API project zip, exactly what ``GET /apis/export`` answers."""
    return transfer.export_api(session, page.user, api_id)


IMPORT_FIELDS = {
    "file": "file",
    "name": "name",
    "context": "context",
    "version": "version",
    "endpointConfig": "production_endpoint",
}


@router.get("/apis/import")
def import_form(page: PublisherPage) -> HTMLResponse:
    return render(page, "publisher/import.html", {"values": {}, "errors": {}})


@router.post("/apis/import", dependencies=[Csrf])
async def import_api(
    request: Request,
    page: PublisherPage,
    session: DbSession,
    file: Annotated[UploadFile | None, File()] = None,
    name: Text = "",
    context: Text = "",
    version: Text = "",
    production_endpoint: Text = "",
    sandbox_endpoint: Text = "",
) -> Response:
    """Create an API from an AsyncAPI file (``POST /apis/import-asyncapi``); the fields
    given override what the document says."""
    values = {
        "name": name,
        "context": context,
        "version": version,
        "production_endpoint": production_endpoint,
        "sandbox_endpoint": sandbox_endpoint,
    }
    properties: dict[str, Any] = {
        k: v.strip() for k, v in values.items() if k in ("name", "context", "version") and v.strip()
    }
    config = endpoint_config(production_endpoint, sandbox_endpoint)
    if config:
        properties["endpointConfig"] = config
    errors: forms.FieldErrors = {}
    status = 400
    if file is None or not file.filename:
        errors["file"] = ["Choose an AsyncAPI 2.x file (YAML or JSON)."]
    elif not context.strip():
        errors["context"] = ["Give the context the API is reached at, e.g. /echo."]
    if not errors:
        try:
            out = await transfer.import_asyncapi(
                request, session, page.user, Response(), file, json.dumps(properties)
            )
        except ApiError as exc:
            if exc.status >= 500:
                raise
            errors, status = forms.from_description(exc.description, IMPORT_FIELDS), exc.status
        else:
            return page.redirect(
                f"/apis/{out.id}", f"API {out.name} {out.version} imported.", "success"
            )
    return render(page, "publisher/import.html", {"values": values, "errors": errors}, status)


def definition_text(api: Api) -> str:
    document = export.asyncapi_yaml(ApiBody.model_validate(api.definition))
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _asyncapi_page(
    page: Page,
    api: Api,
    text: str,
    errors: forms.FieldErrors | None = None,
    valid: str = "",
    status: int = 200,
) -> HTMLResponse:
    context = {
        "section": "AsyncAPI Definition",
        "text": text,
        "errors": errors or {},
        "valid": valid,
    }
    return render_api(page, api, "publisher/asyncapi.html", context, status)


@router.get("/apis/{api_id}/asyncapi")
def asyncapi_page(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    return _asyncapi_page(page, api, definition_text(api))


def definition_from_text(api: Api, text: str, budget: Budget = DEFAULT_BUDGET) -> dict[str, Any]:
    """The API's new working copy from an edited AsyncAPI document: topics, scopes, servers
    and description come from the document; name, version, context, tiers and rate limit stay.

    Raises:
        asyncapi.AsyncApiError: the text is not an AsyncAPI 2.x document.
        DocumentError: the text is over the control plane's document budget.
    """
    current = dict(api.definition)
    read = functools.partial(asyncapi.load_document, field="definition", budget=budget)
    document = load_in_worker_sync(read, text.encode(), budget=budget)
    kept = ("name", "version", "context", "provider", "policies", "apiThrottlingPolicy")
    keep: dict[str, Any] = {key: current[key] for key in kept if key in current}
    body = asyncapi.to_api_body(document, keep)
    if "endpointConfig" not in body and current.get("endpointConfig"):
        body["endpointConfig"] = current["endpointConfig"]
    return body


@router.post("/apis/{api_id}/asyncapi", dependencies=[Csrf])
def save_asyncapi(
    request: Request,
    page: PublisherPage,
    session: DbSession,
    api_id: str,
    definition: Annotated[str, Form()] = "",
    action: Text = "validate",
) -> Response:
    """ "Validate" checks the edited document; "Save" validates it and makes it the working copy."""
    api = api_service.load(session, api_id)
    try:
        document = definition_from_text(api, definition, request.app.state.settings.document_budget)
        body = ApiBody.model_validate(document)
        api_service.check_tiers(session, body)
    except DocumentError as exc:
        return _asyncapi_page(page, api, definition, {"definition": [exc.message]}, status=413)
    except asyncapi.AsyncApiError as exc:
        # the whole document is one field: say where in it the problem is
        message = str(exc).removeprefix("definition: ")
        return _asyncapi_page(page, api, definition, {"definition": [message]}, status=400)
    except ValidationError as exc:
        errors = {
            "definition": [e for group in forms.from_validation(exc, {}).values() for e in group]
        }
        return _asyncapi_page(page, api, definition, errors, status=400)
    except ApiError as exc:
        return _asyncapi_page(page, api, definition, {"definition": [exc.description]}, status=400)
    summary = (
        f"The definition is valid: {len(body.operations)} topic operation(s),"
        f" {len(body.scopes)} scope(s)."
    )
    if action != "save":
        return _asyncapi_page(page, api, definition, valid=summary)
    errors = save_definition(session, api, document, {"": "definition"})
    if errors:
        merged = {"definition": [e for group in errors.values() for e in group]}
        return _asyncapi_page(page, api, definition, merged, status=400)
    return page.redirect(f"/apis/{api.id}/asyncapi", "AsyncAPI definition saved.", "success")


@router.get("/apis/{api_id}/delete")
def confirm_delete(page: PublisherPage, session: DbSession, api_id: str) -> HTMLResponse:
    api = api_service.load(session, api_id)
    context = {"section": "Delete API", "subscribed": subscriptions.count_for_api(session, api)}
    return render_api(page, api, "publisher/delete.html", context)


@router.post("/apis/{api_id}/delete", dependencies=[Csrf])
def delete_api(
    page: PublisherPage, session: DbSession, gateway: AdapterGateway, api_id: str
) -> Response:
    """Delete the API (``DELETE /apis/{id}``): refused while applications subscribe to it."""
    api = api_service.load(session, api_id)
    label = f"{api.name} {api.version}"
    try:
        api_service.delete(session, api_id, gateway)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return page.redirect(f"/apis/{api_id}", exc.description, "error")
    return page.redirect("/apis", f"API {label} deleted.", "success")


# Last, so that /apis/create and /apis/import are not taken for an API id.
router.add_api_route("/apis/{api_id}", overview, methods=["GET"], response_class=HTMLResponse)
