"""The Developer Portal console (``/devportal``). So far: the catalogue of PUBLISHED APIs with
search, from the same code as ``GET /api/am/devportal/v3/apis``. Applications, subscriptions,
keys and Try Out are still to come (see README.md in this directory)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from control_plane.dependencies import DbSession
from control_plane.routers import devportal as rest
from control_plane.web.core import DevportalPage, render

router = APIRouter(
    prefix="/devportal", include_in_schema=False, default_response_class=HTMLResponse
)

PAGE_SIZE = 25


@router.get("")
def home(page: DevportalPage) -> Response:
    return page.redirect("/apis")


@router.get("/apis")
def catalogue(
    page: DevportalPage,
    session: DbSession,
    query: Annotated[str, Query(max_length=500)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    found = rest.list_published(session, page.user, query, PAGE_SIZE, offset)
    context = {
        "apis": found.list,
        "total": found.pagination.total,
        "query": query,
        "offset": offset,
        "size": PAGE_SIZE,
    }
    return render(page, "devportal/apis.html", context)
