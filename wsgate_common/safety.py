"""Safe defaults: no component listens beyond this machine with the built-in ``admin:admin``.

Every component with Basic-auth users (control plane, adapter, enforcer ``/testkey``) calls
:func:`default_user_problem` before it binds; a non-None answer is the one line it prints
before exiting. ``--insecure-dev`` (or ``WSGATE_INSECURE_DEV=true``) lets a demo through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

#: The user every component ships with.
BUILT_IN_USER = ("admin", "admin")
#: How to let a demo through anyway (the flag and its environment variable).
OVERRIDE = "--insecure-dev (WSGATE_INSECURE_DEV=true)"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine.

    ``localhost`` and loopback addresses (127.0.0.0/8, ::1) are; the wildcard addresses
    (``0.0.0.0``, ``::``, empty), other addresses and other names are not.
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_user_problem(
    component: str,
    host: str,
    users: Mapping[str, str],
    users_setting: str,
    host_setting: str,
    insecure_dev: bool,
) -> str | None:
    """The one-line reason ``component`` must not start, or None when it may.

    Args:
        component: e.g. ``"control-plane"``.
        host: the address it is about to bind.
        users: its Basic-auth users (name -> password).
        users_setting / host_setting: the variables that change them, named in the message.
        insecure_dev: the explicit override was given.
    """
    name, password = BUILT_IN_USER
    if insecure_dev or is_loopback(host) or users.get(name) != password:
        return None
    return (
        f"wsgate {component}: refusing to listen on {host or '0.0.0.0'} with the built-in"
        f" {name}:{password} user; set {users_setting} to your own user:password (or bind to"
        f" 127.0.0.1 with {host_setting}, or pass {OVERRIDE} for a demo)"
    )
