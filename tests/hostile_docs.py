"""Hostile documents shared by the unit and integration tests of issue 12: a YAML bomb and a
large but valid AsyncAPI file (tens of thousands of channels)."""

from __future__ import annotations

import io
import zipfile


def yaml_bomb(levels: int = 9) -> bytes:
    """About 10**levels leaves from a few hundred bytes of nested aliases, inside an AsyncAPI
    document (the alias lands in a channel's x-auth-type)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join(f"*a{i - 1}" for _ in range(10))
        lines.append(f"a{i}: &a{i} [{refs}]")
    body = "\n".join(f"  {line}" for line in lines)
    return (
        "asyncapi: 2.0.0\n"
        "info: {title: Bomb, version: '1.0'}\n"
        "x-bomb:\n"
        f"{body}\n"
        "channels:\n"
        "  /c:\n"
        "    subscribe:\n"
        f"      x-auth-type: *a{levels - 1}\n"
    ).encode()


def big_asyncapi(channels: int = 89_000) -> bytes:
    """A valid AsyncAPI 2 document with ``channels`` channels (~5 MB at 89k)."""
    out = io.StringIO()
    out.write("asyncapi: 2.0.0\ninfo:\n  title: Big\n  version: '1.0'\nchannels:\n")
    for i in range(channels):
        out.write(f"  /topic{i}:\n    subscribe:\n      x-auth-type: Any\n")
    return out.getvalue().encode()


def project_zip(asyncapi: bytes, api_yaml: bytes | None = None, name: str = "Big-1.0") -> bytes:
    """An API project zip holding ``asyncapi`` as Definitions/asyncapi.yaml."""
    api = api_yaml or (
        b"type: api\nversion: v4.2.0\ndata:\n  name: Big\n  version: '1.0'\n"
        b"  context: /big\n  endpointConfig:\n    endpoint_type: ws\n"
        b"    production_endpoints: {url: 'ws://localhost:8765'}\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}/api.yaml", api)
        archive.writestr(f"{name}/Definitions/asyncapi.yaml", asyncapi)
    return buffer.getvalue()
