"""API keys (WSO2 devportal ``api-keys/{keyType}/generate``): validity, the IP and referrer
restrictions, and the claims. Pure functions; ``services/api_keys.py`` adds the database.

An API key is a JWT signed with the control plane's token key under its own issuer (the token
issuer + ``/apikey`` unless configured), so enforcers can tell an API key from an access token
by ``iss`` alone. It names its application and key type itself (WSO2's API key claims).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Any

from control_plane.tokens import AppInfo

#: ``validityPeriod`` values meaning "never expires" (WSO2 documents -1; 0 is taken the same).
NO_EXPIRY = (-1, 0)
#: Answered as ``validityTime`` for a key that never expires.
NO_EXPIRY_ANSWER = -1
#: ``validityPeriod`` when the body has none.
DEFAULT_VALIDITY = 3600
#: A revoked key that never expires stays on the revocation list until then (year 9999).
FOREVER = 253_402_300_799
MAX_RESTRICTIONS = 50
MAX_REFERRER_LENGTH = 255
TOKEN_TYPE = "apiKey"
KEY_TYPES = ("PRODUCTION", "SANDBOX")
#: RFC 3986 URI characters and ``*`` (a wildcard); no commas (the list separator), no spaces.
_REFERRER = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&'()*+;=%-]+$")


class ApiKeyInputError(ValueError):
    """A field of the generate body is wrong; the message starts with the field's name."""


def api_key_issuer(token_issuer: str, configured: str = "") -> str:
    """The ``iss`` of API keys: ``configured``, else ``token_issuer`` + ``/apikey``."""
    return configured or token_issuer.rstrip("/") + "/apikey"


def key_type(value: str) -> str:
    """``PRODUCTION`` or ``SANDBOX`` (any case).

    Raises:
        ApiKeyInputError: anything else.
    """
    upper = value.upper()
    if upper not in KEY_TYPES:
        raise ApiKeyInputError(f"keyType: {value[:40]!r} is neither PRODUCTION nor SANDBOX")
    return upper


def lifetime(validity_period: int | None, maximum: int) -> int | None:
    """Seconds the key lives; None when it never expires.

    Raises:
        ApiKeyInputError: below -1, or above ``maximum``.
    """
    if validity_period is None:
        return min(DEFAULT_VALIDITY, maximum)
    if validity_period in NO_EXPIRY:
        return None
    if validity_period < 0 or validity_period > maximum:
        raise ApiKeyInputError(
            f"validityPeriod: must be 1..{maximum} seconds, or -1 (or 0) for a key that never"
            f" expires; got {validity_period}"
        )
    return validity_period


def _entries(value: str, field: str) -> list[str]:
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if len(entries) > MAX_RESTRICTIONS:
        raise ApiKeyInputError(f"{field}: at most {MAX_RESTRICTIONS} entries (got {len(entries)})")
    return entries


def permitted_ips(value: str) -> str:
    """``"10.0.0.1, 192.168.0.0/24"`` -> ``"10.0.0.1,192.168.0.0/24"`` (IPv4/IPv6 addresses
    and CIDR blocks; host bits of a block are cleared).

    Raises:
        ApiKeyInputError: an entry that is neither an address nor a CIDR block, or too many.
    """
    found: list[str] = []
    for entry in _entries(value, "permittedIP"):
        try:
            normal = (
                str(ipaddress.ip_network(entry, strict=False))
                if "/" in entry
                else str(ipaddress.ip_address(entry))
            )
        except ValueError:
            raise ApiKeyInputError(
                f"permittedIP: {entry[:64]!r} is not an IP address or CIDR block"
            ) from None
        if normal not in found:
            found.append(normal)
    return ",".join(found)


def permitted_referrers(value: str) -> str:
    """``"www.example.com/*, *.example.org/*"`` -> the same without spaces; ``*`` is a wildcard.

    Raises:
        ApiKeyInputError: an entry with characters a URL cannot hold, too long, or too many.
    """
    found: list[str] = []
    for entry in _entries(value, "permittedReferer"):
        if len(entry) > MAX_REFERRER_LENGTH or not _REFERRER.match(entry):
            raise ApiKeyInputError(
                f"permittedReferer: {entry[:64]!r} is not a referrer pattern (URL characters"
                f" and '*', at most {MAX_REFERRER_LENGTH} characters)"
            )
        if entry not in found:
            found.append(entry)
    return ",".join(found)


@dataclass(frozen=True)
class Restrictions:
    permitted_ip: str = ""
    permitted_referer: str = ""


def restrictions(properties: dict[str, Any]) -> Restrictions:
    """The restrictions in WSO2's ``additionalProperties``; other properties are ignored.

    Raises:
        ApiKeyInputError: a restriction that is not a string (or list of strings) or is invalid.
    """
    values: dict[str, str] = {}
    for field in ("permittedIP", "permittedReferer"):
        raw = properties.get(field)
        if raw is None:
            raw = ""
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            raw = ",".join(raw)
        if not isinstance(raw, str):
            raise ApiKeyInputError(f"additionalProperties.{field}: must be a string")
        values[field] = raw
    return Restrictions(
        permitted_ip=permitted_ips(values["permittedIP"]),
        permitted_referer=permitted_referrers(values["permittedReferer"]),
    )


def claims(
    *,
    issuer: str,
    app: AppInfo,
    key_type: str,
    now: int,
    validity: int | None,
    limits: Restrictions,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of an API key of ``app``; no ``exp`` when ``validity`` is None."""
    found: dict[str, Any] = {
        "iss": issuer,
        "sub": app.owner,
        "jti": jti or str(uuid.uuid4()),
        "iat": now,
        "keytype": key_type,
        "tokenType": TOKEN_TYPE,
        "application": {"uuid": app.id, "name": app.name, "tier": app.tier, "owner": app.owner},
        "permittedIP": limits.permitted_ip,
        "permittedReferer": limits.permitted_referer,
    }
    if validity is not None:
        found["exp"] = now + validity
    return found


def key_name(app_name: str, key_type: str, jti: str) -> str:
    """What the answer calls the key: application, key type and the start of its id."""
    return f"{app_name}-{key_type.lower()}-{jti[:8]}"


def revoked_until(expires_at: int | None) -> int:
    """How long a revoked key stays on the revocation list: until it would expire anyway."""
    return expires_at or FOREVER
