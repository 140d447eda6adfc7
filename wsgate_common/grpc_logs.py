"""Keep gRPC's C-core from writing its own log lines (another format, on stderr).

C-core logs through absl (``I1201 13:11:29.104 ... ssl_transport_security.cc] Handshake
failed``): a port probe or a client that gives up mid-handshake would put such lines between
the component's own. What matters reaches the component's log anyway, as the status a call or
stream ends with. Each component calls :func:`quiet_core` from its package ``__init__``, before
anything imports grpc; ``GRPC_VERBOSITY=debug`` (or ``info``/``error``) in the environment
still turns C-core logging back on for troubleshooting.
"""

from __future__ import annotations

import os

#: GRPC_VERBOSITY unless the environment sets it.
DEFAULT_VERBOSITY = "NONE"


def quiet_core() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", DEFAULT_VERBOSITY)
