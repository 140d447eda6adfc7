"""Why a handshake is refused: WSO2 error codes and the exception that carries one."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """WSO2 API Manager error codes the enforcer answers with."""

    NOT_FOUND = 404
    API_BLOCKED = 700700
    INTERNAL_ERROR = 900900
    INVALID_CREDENTIALS = 900901
    MISSING_CREDENTIALS = 900902
    RESOURCE_NOT_FOUND = 900906
    SUBSCRIPTION_BLOCKED = 900907
    FORBIDDEN = 900908
    INVALID_SCOPE = 900910


EXPLANATIONS: dict[ErrorCode, str] = {
    ErrorCode.NOT_FOUND: "no matching API",
    ErrorCode.API_BLOCKED: "API blocked",
    ErrorCode.INTERNAL_ERROR: "internal error",
    ErrorCode.INVALID_CREDENTIALS: "invalid credentials",
    ErrorCode.MISSING_CREDENTIALS: "missing credentials",
    ErrorCode.RESOURCE_NOT_FOUND: "no matching topic",
    ErrorCode.SUBSCRIPTION_BLOCKED: "subscription blocked",
    ErrorCode.FORBIDDEN: "forbidden",
    ErrorCode.INVALID_SCOPE: "scope mismatch",
}


def explain(code: int) -> str:
    """``900901 (invalid credentials)`` for logs."""
    try:
        return f"{code} ({EXPLANATIONS[ErrorCode(code)]})"
    except ValueError:
        return str(code)


class Denial(Exception):
    """A refused handshake: the HTTP status and WSO2 body the router answers the upgrade with."""

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        description: str = "",
    ) -> None:
        super().__init__(f"{http_status} {code} {message}: {description}")
        self.http_status = http_status
        self.code = code
        self.message = message
        self.description = description


class AuthError(Denial):
    """The token could not be trusted: always 401 900901 ``Invalid Credentials``."""

    def __init__(self, description: str) -> None:
        super().__init__(401, ErrorCode.INVALID_CREDENTIALS, "Invalid Credentials", description)


class UnknownKeyError(AuthError):
    """The issuer is known but holds no key with the token's ``kid``.

    Kept apart so the caller can refresh that issuer's JWKS and validate once more.
    """

    def __init__(self, issuer: str, kid: str | None) -> None:
        super().__init__("Unknown signing key" + (f" (kid {kid!r})" if kid else ""))
        self.issuer = issuer
        self.kid = kid
