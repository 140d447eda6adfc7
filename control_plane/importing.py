"""An AsyncAPI upload -> the API body it creates: the part of ``POST /apis/import-asyncapi``
that runs in a document worker process (wsgate_common.documents.load_in_worker).

Kept apart from the router module so that a worker imports only the document reader and the
schemas, not the web application; it answers plain values that pickle.
"""

from __future__ import annotations

from pydantic import ValidationError

from control_plane import asyncapi
from control_plane.schemas import ApiBody
from wsgate_common.documents import Budget


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: message`` lines joined by ``; ``."""
    lines = []
    for error in exc.errors():
        field = ""
        for part in error.get("loc", ()):
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{field}: {message}" if field else message)
    return "; ".join(lines)


def parse_import(content: bytes, properties: str | None, budget: Budget) -> ApiBody | str:
    """The validated body, or the message of a 400 answer.

    Raises:
        DocumentError: the document is over the budget (a 413 answer).
    """
    try:
        document = asyncapi.load_document(content, budget=budget)
        return ApiBody.model_validate(
            asyncapi.to_api_body(document, asyncapi.load_properties(properties))
        )
    except asyncapi.AsyncApiError as exc:
        return str(exc)
    except ValidationError as exc:
        return describe(exc)
