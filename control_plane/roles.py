"""Users' roles: who may use the publisher, developer portal and admin APIs.

Pure functions over the ``WSGATE_CP_ROLES`` text; ``auth.py`` applies them per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PUBLISHER = "publisher"
SUBSCRIBER = "subscriber"
ADMIN = "admin"
#: What the admin role implies: it may do everything.
IMPLIED = {ADMIN: frozenset({ADMIN, PUBLISHER, SUBSCRIBER})}

_ROLE = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def parse_roles(spec: str) -> dict[str, frozenset[str]]:
    """``"dev=subscriber;pub=publisher,subscriber"`` -> user -> roles.

    Raises:
        ValueError: an entry without ``=``, an empty user, or a role with odd characters.
    """
    result: dict[str, frozenset[str]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, roles = entry.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"role entry {entry!r} is not 'user=role,role'")
        found = [role.strip() for role in roles.split(",") if role.strip()]
        for role in found:
            if not _ROLE.match(role):
                raise ValueError(f"role {role!r} of user {name!r} has characters not allowed")
        result[name] = frozenset(found)
    return result


def roles_of(user: str, listed: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The user's roles with what they imply; unlisted users: admin for ``admin``, else
    subscriber (like a self-signed-up developer-portal user in WSO2)."""
    given = listed.get(user)
    if given is None:
        given = frozenset({ADMIN}) if user == ADMIN else frozenset({SUBSCRIBER})
    expanded = set(given)
    for role in given:
        expanded |= IMPLIED.get(role, frozenset())
    return frozenset(expanded)
