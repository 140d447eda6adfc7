"""Scopes: one namespace over every API, as in WSO2's key manager.

A scope an API declares itself (a *local* scope) belongs to the provider (the publishing user)
whose API declared it first: that provider's APIs may all declare it (its versions, its other
APIs), no other provider's may. A scope several
APIs use is a *shared* scope (publisher ``/scopes``): an admin defines its role bindings once
and APIs refer to it with ``shared: true``. ``/oauth2/token`` takes bindings only from what is
published or deployed (:func:`token_bindings`), never from a draft.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.errors import ApiError, not_found
from control_plane.models import Api, ApiRevision, RevisionDeployment, SharedScope
from control_plane.schemas import ApiBody, ApiScope, SharedScopeBody, SharedScopeOut

#: Lifecycle states whose working copy grants scopes (a draft's does not).
GRANTING_STATES = ("PUBLISHED", "DEPRECATED")
#: A deployed revision grants scopes unless its API is retired.
NON_GRANTING_DEPLOYED = ("RETIRED",)


@dataclass(frozen=True)
class Owner:
    """An API that declares a local scope, and its provider (who owns the scope)."""

    name: str
    version: str
    provider: str


def _local_scopes(definition: dict[str, Any] | None) -> Iterable[tuple[str, list[str]]]:
    for item in (definition or {}).get("scopes") or []:
        if not isinstance(item, dict) or item.get("shared"):
            continue
        scope = item.get("scope")
        if isinstance(scope, dict) and isinstance(scope.get("name"), str):
            bindings = scope.get("bindings") or []
            yield scope["name"], [b for b in bindings if isinstance(b, str)]


def _local_owners(session: Session, exclude: uuid.UUID | None) -> dict[str, list[Owner]]:
    """Local scope name -> the APIs (other than ``exclude``) whose working copy or any
    revision declares it."""
    owners: dict[str, list[Owner]] = {}
    rows = session.execute(select(Api.id, Api.name, Api.version, Api.provider, Api.definition))
    revisions = session.execute(
        select(Api.id, Api.name, Api.version, Api.provider, ApiRevision.definition).join(
            ApiRevision, ApiRevision.api_id == Api.id
        )
    )
    for api_id, name, version, provider, definition in [*rows, *revisions]:
        if api_id == exclude:
            continue
        for scope, _ in _local_scopes(definition):
            owners.setdefault(scope, []).append(Owner(name, version, provider))
    return owners


def settle(session: Session, body: ApiBody, provider: str, api_id: uuid.UUID | None) -> ApiBody:
    """``body`` with its shared scopes' bindings taken from their definitions.

    Raises:
        ApiError: 400 for a shared scope that does not exist; 409 for a local scope that is a
            shared scope's name or belongs to another API.
    """
    if not body.scopes:
        return body
    names = [item.scope.name for item in body.scopes]
    shared = {
        row.name: row
        for row in session.scalars(select(SharedScope).where(SharedScope.name.in_(names)))
    }
    owners = _local_owners(session, api_id) if any(not i.shared for i in body.scopes) else {}
    settled: list[ApiScope] = []
    for index, item in enumerate(body.scopes):
        name = item.scope.name
        if item.shared:
            row = shared.get(name)
            if row is None:
                raise ApiError(
                    400,
                    f"scopes[{index}]: there is no shared scope {name!r}; an admin creates it"
                    " with POST /scopes",
                )
            scope = item.scope.model_copy(update={"bindings": list(row.bindings)})
            item = item.model_copy(update={"scope": scope})
        elif name in shared:
            raise ApiError(
                409, f"scopes[{index}]: {name!r} is a shared scope; declare it with shared: true"
            )
        else:
            for owner in owners.get(name, []):
                if owner.provider != provider:
                    raise ApiError(
                        409,
                        f"scopes[{index}]: scope {name!r} belongs to API {owner.name}"
                        f" {owner.version} of another provider; choose another name, or have"
                        " an admin make it a shared scope",
                    )
        settled.append(item)
    return body.model_copy(update={"scopes": settled})


def token_bindings(session: Session) -> dict[str, list[str]]:
    """Scope -> role bindings for ``/oauth2/token``: shared scopes, plus the local scopes of
    published APIs' working copies and of deployed revisions. Should two owners declare one
    name (data from before names were owned), the provider of the oldest API wins."""
    found: dict[str, list[str]] = {
        row.name: list(row.bindings) for row in session.scalars(select(SharedScope))
    }
    claimed: dict[str, str] = {}
    working = select(Api.name, Api.provider, Api.created_at, Api.definition).where(
        Api.lifecycle_status.in_(GRANTING_STATES)
    )
    deployed = (
        select(Api.name, Api.provider, Api.created_at, ApiRevision.definition)
        .join(ApiRevision, ApiRevision.api_id == Api.id)
        .where(Api.lifecycle_status.not_in(NON_GRANTING_DEPLOYED))
        .where(ApiRevision.id.in_(select(RevisionDeployment.revision_id)))
    )
    rows = [*session.execute(working), *session.execute(deployed)]
    rows.sort(key=lambda row: row[2])
    shared = set(found)
    for _, provider, _, definition in rows:
        for scope, bindings in _local_scopes(definition):
            if scope in shared:
                continue
            if claimed.setdefault(scope, provider) == provider:
                found.setdefault(scope, []).extend(b for b in bindings if b not in found[scope])
    return found


# --- shared scopes (publisher /scopes) ----------------------------------------------------------


def _usage(session: Session, name: str) -> int:
    count = 0
    for definition in session.scalars(select(Api.definition)):
        for item in (definition or {}).get("scopes") or []:
            if isinstance(item, dict) and item.get("shared"):
                scope = item.get("scope") or {}
                if isinstance(scope, dict) and scope.get("name") == name:
                    count += 1
                    break
    return count


def to_out(session: Session, row: SharedScope) -> SharedScopeOut:
    return SharedScopeOut(
        id=str(row.id),
        name=row.name,
        display_name=row.display_name,
        description=row.description,
        bindings=list(row.bindings),
        usage_count=_usage(session, row.name),
    )


def load(session: Session, scope_id: str) -> SharedScope:
    try:
        row = session.get(SharedScope, uuid.UUID(scope_id))
    except ValueError:
        row = None
    if row is None:
        raise not_found("shared scope", scope_id)
    return row


def list_shared(session: Session, limit: int, offset: int) -> tuple[list[SharedScope], int]:
    rows = list(session.scalars(select(SharedScope).order_by(SharedScope.name)))
    return rows[offset : offset + limit], len(rows)


def create(session: Session, body: SharedScopeBody) -> SharedScope:
    owners = _local_owners(session, None).get(body.name)
    if owners:
        raise ApiError(
            409, f"name: scope {body.name!r} belongs to API {owners[0].name} {owners[0].version}"
        )
    if session.scalar(select(SharedScope.id).where(SharedScope.name == body.name)) is not None:
        raise ApiError(409, f"name: a shared scope {body.name!r} already exists")
    row = SharedScope(
        id=uuid.uuid4(),
        name=body.name,
        display_name=body.display_name or body.name,
        description=body.description,
        bindings=list(body.bindings),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, f"name: a shared scope {body.name!r} already exists") from None
    return row


def update(session: Session, scope_id: str, body: SharedScopeBody) -> SharedScope:
    row = load(session, scope_id)
    if body.name != row.name:
        raise ApiError(400, "name: a shared scope's name cannot be changed")
    row.display_name = body.display_name or body.name
    row.description = body.description
    row.bindings = list(body.bindings)
    session.commit()
    return row


def delete(session: Session, scope_id: str) -> None:
    row = load(session, scope_id)
    used = _usage(session, row.name)
    if used:
        raise ApiError(409, f"shared scope {row.name!r} is used by {used} API(s)")
    session.delete(row)
    session.commit()
