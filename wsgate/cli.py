"""`wsgate <command>`: one entry point that starts a component or runs a client command.

Each component command runs exactly one component in the foreground; `wsgate up` only
supervises those same commands as child processes.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

COMMANDS: dict[str, tuple[str, str]] = {
    "control-plane": ("control_plane.main", "publisher, devportal, admin REST API, OAuth2 (:9443)"),
    "adapter": ("adapter.main", "compiles APIs, serves them over xDS (:9843, :18000)"),
    "enforcer": ("enforcer.main", "checks tokens, scopes, subscriptions (:8081)"),
    "router": ("router.main", "the data plane: handshakes and relay (:9090, :9095)"),
    "echo-backend": ("wsgate.echo", "a sample WebSocket echo backend (:8765)"),
    "up": ("wsgate.up", "start everything locally with a sample API (`make run`)"),
    "mg": ("wsgate.mg", "manage environments and APIs via the adapter (apictl mg)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: wsgate <command> [options]   (wsgate <command> --help for more; wsgate --version)",
        "",
    ]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version (the source tree's when run uninstalled)."""
    try:
        return metadata.version("wsgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(f"wsgate {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"Error: unknown command {name!r} (commands: {', '.join(COMMANDS)}; "
            "`wsgate --help` describes them)",
            file=sys.stderr,
        )
        return 1
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result
