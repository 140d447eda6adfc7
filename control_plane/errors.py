"""Errors as WSO2-style ``{code, message, description}`` bodies, whatever raised them."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wsgate_common.errors import ErrorBody


class ApiError(Exception):
    """Raised anywhere below a router; becomes one error response.

    Args:
        status: HTTP status code (also the body's ``code``).
        description: a sentence saying what went wrong and, where possible, what to do.
        headers: extra response headers (``WWW-Authenticate`` for 401).
    """

    def __init__(
        self, status: int, description: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what} {ident} does not exist")


#: No error description is longer (a last guard against echoing a large input back).
MAX_DESCRIPTION = 2000


def _respond(status: int, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if len(description) > MAX_DESCRIPTION:
        description = description[:MAX_DESCRIPTION] + "..."
    body = ErrorBody(code=status, message=HTTPStatus(status).phrase, description=description)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    """``("body", "operations", 0, "verb")`` -> ``"operations[0].verb"``."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, str) and len(part) > 40:  # a dict key from the request
            part = part[:40] + "..."
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


#: pydantic's error types for a body that is not an object: what FastAPI hands on when the
#: request did not say ``Content-Type: application/json`` (it then validates the raw bytes).
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type"})


def describe_validation(exc: RequestValidationError, content_type: str | None = None) -> str:
    """One line per invalid field, each starting with the field's name; a body sent without a
    JSON content type is one line saying so (pydantic's own words point elsewhere)."""
    is_json = (content_type or "").split(";")[0].strip().lower().endswith("json")
    if not is_json and any(
        tuple(error.get("loc", ())) == ("body",) and error.get("type") in _NOT_AN_OBJECT
        for error in exc.errors()
    ):
        got = f"got {content_type!r}" if content_type else "no Content-Type"
        return (
            "body: the request body must be JSON, sent with 'Content-Type: application/json'"
            f" ({got})"
        )
    lines = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        field = _field(tuple(error.get("loc", ())))
        if error.get("type") == "json_invalid":
            field = "body"
        lines.append(f"{field}: {message}" if field else message)
    return "; ".join(lines)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _respond(exc.status, exc.description, exc.headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return _respond(exc.status_code, detail, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _respond(400, describe_validation(exc, request.headers.get("content-type")))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
