"""The error body every wsgate HTTP endpoint answers with: ``{code, message, description}``."""

from __future__ import annotations

import json

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """WSO2-style error: a numeric code, a short message and a sentence saying what to do."""

    code: int
    message: str
    description: str = ""


def error_json(code: int, message: str, description: str = "") -> bytes:
    """Serialize an error body, for code paths that write raw HTTP (the router)."""
    return json.dumps({"code": code, "message": message, "description": description}).encode()
