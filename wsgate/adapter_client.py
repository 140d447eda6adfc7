"""The adapter's REST API as `wsgate mg` uses it: requests are built and answers formatted by
pure functions (unit-tested without a server); :func:`send` is the only part doing I/O.
"""

from __future__ import annotations

import io
import json
import ssl
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wsgate.cliconfig import CliError

BASE_PATH = "/api/mgw/adapter/0.1"
TIMEOUT_SECONDS = 30.0
SKIPPED_NAMES = frozenset({"__pycache__", ".DS_Store", ".git"})
#: ``source`` of a listed API -> the OWNER column: only the owner may undeploy or replace it.
OWNERS = {"control-plane": "control-plane", "adapter": "cli"}
PROJECT_FILES = ("api.yaml", "api.yml", "api.json")  # one of them marks a project folder


@dataclass(frozen=True)
class Request:
    """One HTTP call, fully described, so tests can compare it field by field."""

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json_body: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None


def api_url(adapter: str, path: str) -> str:
    """``https://host:9843`` + ``/apis`` -> the full resource URL under the adapter base path."""
    base = adapter.rstrip("/")
    if not base.endswith(BASE_PATH):
        base += BASE_PATH
    return base + path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_request(adapter: str, username: str, password: str) -> Request:
    return Request(
        "POST",
        api_url(adapter, "/oauth2/token"),
        json_body={"username": username, "password": password},
    )


def deploy_request(
    adapter: str, token: str, filename: str, payload: bytes, override: bool
) -> Request:
    params = {"override": "true"} if override else {}
    return Request(
        "POST",
        api_url(adapter, "/apis"),
        params=params,
        headers=bearer(token),
        files={"file": (filename, payload, "application/zip")},
    )


def undeploy_request(
    adapter: str, token: str, name: str, version: str, vhost: str | None
) -> Request:
    params = {"apiName": name, "version": version}
    if vhost:
        params["vhost"] = vhost
    return Request("DELETE", api_url(adapter, "/apis"), params=params, headers=bearer(token))


def list_request(adapter: str, token: str, query: str | None, limit: int | None) -> Request:
    params: dict[str, str] = {}
    if query:
        params["query"] = query
    if limit is not None:
        params["limit"] = str(limit)
    return Request("GET", api_url(adapter, "/apis"), params=params, headers=bearer(token))


def status_request(adapter: str, token: str) -> Request:
    return Request("GET", api_url(adapter, "/status"), headers=bearer(token))


def nack_warnings(status: Mapping[str, Any]) -> list[str]:
    """One ``Warning:`` line per client that refused the version its label serves now."""
    lines = []
    for row in status.get("nackedCurrent") or []:
        kind = str(row.get("type", "")).rsplit(".", 1)[-1]
        lines.append(
            f"Warning: a client of label {row.get('label')} ({row.get('peer')}) rejected "
            f"{kind} version {row.get('version')} and keeps version {row.get('acked') or '-'}: "
            f"{row.get('error')}"
        )
    return lines


def status_text(status: Mapping[str, Any]) -> str:
    """``mg status``: per label and resource type, the version served and every client."""
    rows = []
    for label, by_type in sorted((status.get("labels") or {}).items()):
        for type_url, entry in sorted(by_type.items()):
            kind = type_url.rsplit(".", 1)[-1]
            clients = entry.get("clients") or []
            if not clients:
                rows.append([label, kind, entry.get("version"), "-", "-", ""])
            for c in clients:
                nack = c.get("lastNack")
                refused = f"{nack['version']}: {nack['error']}" if nack else ""
                rows.append(
                    [label, kind, entry.get("version"), c.get("peer"), c.get("acked"), refused]
                )
    table = format_table(["LABEL", "TYPE", "SERVED", "CLIENT", "ACKED", "LAST_NACK"], rows)
    return "\n".join(
        [f"adapter boot id: {status.get('bootId', '?')}", table, *nack_warnings(status)]
    )


def error_from_response(status: int, body: str) -> CliError:
    """Turn an adapter error answer (``{code, message, description}``) into a :class:`CliError`."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        description = str(data.get("description") or f"HTTP {status}")
        return CliError(str(data["message"]), description, status)
    text = body.strip().splitlines()[0][:200] if body.strip() else ""
    return CliError(f"adapter answered HTTP {status}", text or "no error body", status)


def zip_project(path: Path) -> tuple[str, bytes]:
    """A project as the adapter wants it: a zip whose single top folder is the project folder.

    Raises:
        CliError: the path does not exist or is neither a folder nor a ``.zip`` file.
    """
    if not path.exists():
        raise CliError(f"{path} does not exist", "give a project folder or a .zip file with -f")
    if path.is_file() and path.suffix.lower() == ".zip":
        return path.name, path.read_bytes()
    if not path.is_dir():
        raise CliError(
            f"{path} is not an API project", "give a project folder or a .zip file with -f"
        )
    root = path.resolve()
    if not any((root / name).is_file() for name in PROJECT_FILES) and not any(
        (sub / name).is_file() for sub in root.iterdir() if sub.is_dir() for name in PROJECT_FILES
    ):
        raise CliError(
            f"{path} is not an API project",
            f"the folder has no {' or '.join(PROJECT_FILES)}; an API Manager export has one",
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(root.rglob("*")):
            relative = file.relative_to(root)
            if not file.is_file() or SKIPPED_NAMES.intersection(relative.parts):
                continue
            archive.write(file, f"{root.name}/{relative.as_posix()}")
    return f"{root.name}.zip", buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def format_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """Left-aligned columns, three spaces apart, like apictl prints them."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def apis_table(listing: Mapping[str, Any], limit: int | None = None) -> str:
    """The ``mg get apis`` table from a ``GET /apis`` answer."""
    apis = list(listing.get("list") or [])
    if limit is not None:
        apis = apis[:limit]
    rows = [
        [
            a.get("apiName"),
            a.get("version"),
            a.get("apiType"),
            a.get("context"),
            a.get("gateway-envs") or a.get("gatewayEnvs"),
            OWNERS.get(str(a.get("source")), a.get("source")),
        ]
        for a in apis
    ]
    return format_table(["NAME", "VERSION", "TYPE", "CONTEXT", "GATEWAY_ENVS", "OWNER"], rows)


def send(
    request: Request, verify: ssl.SSLContext | bool, certs_dir: Path | None = None
) -> httpx.Response:
    """Perform ``request``; connection and TLS failures become one-line :class:`CliError`s
    (``certs_dir`` is the folder of extra trusted CAs the TLS failure points to)."""
    try:
        with httpx.Client(verify=verify, timeout=TIMEOUT_SECONDS) as client:
            return client.request(
                request.method,
                request.url,
                params=request.params or None,
                headers=request.headers or None,
                json=request.json_body,
                files=request.files,
            )
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            folder = certs_dir or Path.home() / ".wsgate" / "certs"
            raise CliError(
                f"cannot verify the TLS certificate of {request.url}",
                f"pass -k, or copy the gateway's CA certificate into {folder}/",
            ) from exc
        raise CliError(f"cannot connect to {request.url}", str(exc) or type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise CliError(f"request to {request.url} failed", str(exc) or type(exc).__name__) from exc
