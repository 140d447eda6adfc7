"""Reading a WSO2 API project (the apictl / API-M export format) into an ApiDefinition.

A project is ``api.yaml`` (or ``api.json``), ``Definitions/asyncapi.yaml`` (or ``.json``), an
optional ``deployment_environments.yaml`` and optional ``Endpoint-certificates/``. It arrives
as a zip (normally with one top-level folder) or as a directory. Everything below the
``collect_*`` readers is pure: files in, definition out, and every error names its file and field.
"""

from __future__ import annotations

import io
import json
import posixpath
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from wsgate_proto import definition_pb2

MAX_ZIP_BYTES = 10 * 1024 * 1024
MAX_ENTRIES = 1000
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024

API_FILES = ("api.yaml", "api.yml", "api.json")
ASYNCAPI_FILES = tuple(f"Definitions/asyncapi.{ext}" for ext in ("yaml", "yml", "json"))
ENV_FILES = ("deployment_environments.yaml", "deployment_environments.yml")
CERT_DIR = "Endpoint-certificates/"
VERBS = ("PUBLISH", "SUBSCRIBE")


class ProjectError(ValueError):
    """The project is not usable; says which file and which field, for a 400 answer."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class ProjectFiles:
    """The files of a project that matter, by path relative to the project root."""

    files: Mapping[str, bytes]
    prefix: str = ""  # the top-level folder stripped off, for error messages

    def shown(self, path: str) -> str:
        return self.prefix + path


def _relevant(path: str) -> bool:
    return (
        path in API_FILES
        or path in ASYNCAPI_FILES
        or path in ENV_FILES
        or (path.startswith(CERT_DIR) and not path.endswith("/"))
    )


def _root_prefix(names: list[str], source: str) -> str:
    """The folder that holds api.yaml: the archive root or one top-level folder."""
    for name in API_FILES:
        if name in names:
            return ""
    tops = {n.split("/", 1)[0] + "/" for n in names if "/" in n}
    for top in sorted(tops):
        if any(top + api in names for api in API_FILES):
            return top
    raise ProjectError(source, "", "no api.yaml (or api.json) at the root or in a top-level folder")


def collect_zip(data: bytes, source: str = "project.zip") -> ProjectFiles:
    """Read the project files from zip bytes, refusing archives that are too large.

    Raises:
        ProjectError: not a zip, too big or too many entries, or no api.yaml inside.
    """
    if len(data) > MAX_ZIP_BYTES:
        raise ProjectError(source, "", f"archive is larger than {MAX_ZIP_BYTES} bytes")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ProjectError(source, "", f"not a valid zip archive ({exc})") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_ENTRIES:
            raise ProjectError(source, "", f"archive has more than {MAX_ENTRIES} entries")
        names = [i.filename.lstrip("/") for i in infos if not i.filename.startswith("__MACOSX/")]
        prefix = _root_prefix(names, source)
        files: dict[str, bytes] = {}
        total = 0
        for info in infos:
            name = info.filename.lstrip("/")
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :]
            if not _relevant(rel):
                continue
            if info.file_size > MAX_FILE_BYTES:
                raise ProjectError(name, "", f"file is larger than {MAX_FILE_BYTES} bytes")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise ProjectError(source, "", f"project is larger than {MAX_TOTAL_BYTES} bytes")
            try:
                with archive.open(info) as handle:
                    content = handle.read(MAX_FILE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                raise ProjectError(name, "", f"cannot be read from the archive ({exc})") from None
            if len(content) > MAX_FILE_BYTES:  # the header lied about the size
                raise ProjectError(name, "", f"file is larger than {MAX_FILE_BYTES} bytes")
            files[rel] = content
    return ProjectFiles(files, prefix)


def collect_dir(root: Path) -> ProjectFiles:
    """Read the project files from a directory (or its single subfolder holding api.yaml).

    Raises:
        ProjectError: the directory does not hold a project.
    """
    if not root.is_dir():
        raise ProjectError(str(root), "", "not a directory")
    if not any((root / name).is_file() for name in API_FILES):
        subdirs = [d for d in root.iterdir() if d.is_dir()]
        found = [d for d in subdirs if any((d / n).is_file() for n in API_FILES)]
        if len(found) != 1:
            raise ProjectError(str(root), "", "no api.yaml (or api.json) in this directory")
        root = found[0]
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or not _relevant(rel):
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ProjectError(rel, "", f"file is larger than {MAX_FILE_BYTES} bytes")
        total += size
        if total > MAX_TOTAL_BYTES:
            raise ProjectError(str(root), "", f"project is larger than {MAX_TOTAL_BYTES} bytes")
        files[rel] = path.read_bytes()
    return ProjectFiles(files, root.name + "/")


def _load_document(name: str, content: bytes) -> Any:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ProjectError(name, "", "not UTF-8 text") from None
    if name.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(
                name, "", f"JSON syntax error at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ProjectError(name, "", f"YAML syntax error{where}: {problem}") from None


class _Reader:
    """Typed access to one parsed document, so every complaint names file and field."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, field: str, message: str) -> ProjectError:
        return ProjectError(self.file, field, message)

    def mapping(self, value: Any, field: str, required: bool = False) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(field, "must be a mapping" if value is not None else "is required")
        return value

    def listing(self, value: Any, field: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(field, "must be a list")
        return value

    def text(self, value: Any, field: str, required: bool = False, default: str = "") -> str:
        if value is None or value == "":
            if required:
                raise self.fail(field, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(field, "must be a string")
        return str(value).strip()

    def texts(self, value: Any, field: str) -> list[str]:
        return [self.text(v, f"{field}[{i}]") for i, v in enumerate(self.listing(value, field))]

    def flag(self, value: Any, field: str, default: bool = False) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(field, "must be true or false")


def _ws_url(reader: _Reader, url: str, field: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise reader.fail(field, f"{url!r} is not a ws:// or wss:// URL")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise reader.fail(field, f"{url!r} has an invalid port") from None
    return url


def _server_url(reader: _Reader, server: dict[str, Any], field: str) -> str:
    """AsyncAPI 2 server: ``url`` may lack a scheme, then ``protocol`` gives it."""
    url = reader.text(server.get("url"), f"{field}.url")
    if url and "://" not in url:
        protocol = reader.text(server.get("protocol"), f"{field}.protocol", default="ws")
        url = f"{protocol}://{url}"
    return _ws_url(reader, url, f"{field}.url") if url else ""


def _auth_type(value: str) -> str:
    return "None" if value.lower() == "none" else (value or "Any")


def _api_operations(reader: _Reader, data: dict[str, Any]) -> list[definition_pb2.Operation]:
    operations = []
    for i, raw in enumerate(reader.listing(data.get("operations"), "data.operations")):
        field = f"data.operations[{i}]"
        op = reader.mapping(raw, field, required=True)
        verb = reader.text(op.get("verb"), f"{field}.verb", default="SUBSCRIBE").upper()
        if verb not in VERBS:
            raise reader.fail(f"{field}.verb", f"{verb!r} is not PUBLISH or SUBSCRIBE")
        operations.append(
            definition_pb2.Operation(
                target=reader.text(op.get("target"), f"{field}.target", required=True),
                verb=verb,
                scopes=reader.texts(op.get("scopes"), f"{field}.scopes"),
                uri_mapping=reader.text(op.get("uriMapping"), f"{field}.uriMapping"),
                auth_type=_auth_type(reader.text(op.get("authType"), f"{field}.authType")),
                throttling_policy=reader.text(
                    op.get("throttlingPolicy"), f"{field}.throttlingPolicy"
                ),
            )
        )
    return operations


def _channel_operations(reader: _Reader, doc: dict[str, Any]) -> list[definition_pb2.Operation]:
    operations = []
    channels = reader.mapping(doc.get("channels"), "channels")
    for target, raw in channels.items():
        channel = reader.mapping(raw, f"channels.{target}")
        for key in ("publish", "subscribe"):
            if key not in channel:
                continue
            field = f"channels.{target}.{key}"
            op = reader.mapping(channel[key], field)
            operations.append(
                definition_pb2.Operation(
                    target=str(target),
                    verb=key.upper(),
                    scopes=reader.texts(op.get("x-scopes"), f"{field}.x-scopes"),
                    uri_mapping=reader.text(op.get("x-uri-mapping"), f"{field}.x-uri-mapping"),
                    auth_type=_auth_type(
                        reader.text(op.get("x-auth-type"), f"{field}.x-auth-type")
                    ),
                    throttling_policy=reader.text(
                        op.get("x-throttling-tier"), f"{field}.x-throttling-tier"
                    ),
                )
            )
    return operations


def _merge_operations(
    declared: list[definition_pb2.Operation], channels: list[definition_pb2.Operation]
) -> list[definition_pb2.Operation]:
    """api.yaml operations win; AsyncAPI fills what they leave empty and adds missing topics."""
    by_key = {(op.target, op.verb): op for op in channels}
    merged = []
    for op in declared:
        fallback = by_key.get((op.target, op.verb))
        if fallback is not None:
            if not op.uri_mapping:
                op.uri_mapping = fallback.uri_mapping
            if not op.scopes:
                op.scopes.extend(fallback.scopes)
        merged.append(op)
    declared_targets = {op.target for op in declared}
    merged += [op for op in channels if op.target not in declared_targets]
    return merged


def _scopes(reader: _Reader, data: dict[str, Any]) -> list[definition_pb2.Scope]:
    scopes = []
    for i, raw in enumerate(reader.listing(data.get("scopes"), "data.scopes")):
        field = f"data.scopes[{i}]"
        entry = reader.mapping(raw, field, required=True)
        scope = reader.mapping(entry.get("scope", entry), f"{field}.scope", required=True)
        scopes.append(
            definition_pb2.Scope(
                name=reader.text(scope.get("name"), f"{field}.scope.name", required=True),
                display_name=reader.text(scope.get("displayName"), f"{field}.scope.displayName"),
                description=reader.text(scope.get("description"), f"{field}.scope.description"),
                bindings=reader.texts(scope.get("bindings"), f"{field}.scope.bindings"),
            )
        )
    return scopes


def _cors(reader: _Reader, data: dict[str, Any]) -> definition_pb2.CorsConfiguration:
    """WSO2's ``corsConfiguration``: only the switch and the allowed origins matter here (the
    other fields answer CORS preflights, which a WebSocket upgrade never makes)."""
    cors = reader.mapping(data.get("corsConfiguration"), "data.corsConfiguration")
    return definition_pb2.CorsConfiguration(
        cors_configuration_enabled=reader.flag(
            cors.get("corsConfigurationEnabled"), "data.corsConfiguration.corsConfigurationEnabled"
        ),
        access_control_allow_origins=reader.texts(
            cors.get("accessControlAllowOrigins"),
            "data.corsConfiguration.accessControlAllowOrigins",
        ),
    )


def _deployments(project: ProjectFiles) -> list[definition_pb2.Deployment]:
    name = next((n for n in ENV_FILES if n in project.files), None)
    if name is None:
        return []
    reader = _Reader(project.shown(name))
    doc = _load_document(reader.file, project.files[name])
    if doc is None:
        return []
    doc = reader.mapping(doc, "", required=True)
    kind = reader.text(doc.get("type"), "type", default="deployment_environments")
    if kind != "deployment_environments":
        raise reader.fail("type", f"{kind!r} is not deployment_environments")
    deployments = []
    for i, raw in enumerate(reader.listing(doc.get("data"), "data")):
        entry = reader.mapping(raw, f"data[{i}]", required=True)
        deployments.append(
            definition_pb2.Deployment(
                name=reader.text(
                    entry.get("deploymentEnvironment"),
                    f"data[{i}].deploymentEnvironment",
                    required=True,
                ),
                vhost=reader.text(entry.get("deploymentVhost"), f"data[{i}].deploymentVhost"),
            )
        )
    return deployments


def _certificates(project: ProjectFiles) -> str:
    """Every PEM certificate under Endpoint-certificates/, as one CA bundle."""
    bundle = []
    for name in sorted(project.files):
        if not name.startswith(CERT_DIR) or not name.lower().endswith((".pem", ".crt", ".cer")):
            continue
        content = project.files[name]
        try:
            certs = x509.load_pem_x509_certificates(content)
        except ValueError as exc:
            raise ProjectError(project.shown(name), "", f"not a PEM certificate ({exc})") from None
        bundle += [c.public_bytes(Encoding.PEM).decode() for c in certs]
    return "".join(bundle)


def parse_project(project: ProjectFiles) -> definition_pb2.ApiDefinition:
    """Build the ApiDefinition a project describes (nothing resolved yet; see compile.py).

    Raises:
        ProjectError: naming the file and field that is missing or wrong.
    """
    api_name = next((n for n in API_FILES if n in project.files), None)
    if api_name is None:
        raise ProjectError(project.shown("api.yaml"), "", "file is missing")
    reader = _Reader(project.shown(api_name))
    doc = reader.mapping(_load_document(reader.file, project.files[api_name]), "", required=True)
    kind = reader.text(doc.get("type"), "type", default="api")
    if kind != "api":
        raise reader.fail("type", f"{kind!r} is not an API project (expected 'api')")
    data = reader.mapping(doc.get("data"), "data", required=True)

    name = reader.text(data.get("name"), "data.name", required=True)
    version = reader.text(data.get("version"), "data.version", required=True)
    context = reader.text(data.get("context"), "data.context", required=True)
    api_type = reader.text(data.get("type"), "data.type", default="WS").upper()
    if api_type not in ("WS", "WEBSOCKET"):
        raise reader.fail("data.type", f"{api_type!r} is not a WebSocket (WS) API")
    if ":" in name or "/" in name:
        raise reader.fail("data.name", "must not contain ':' or '/'")

    endpoint_config = reader.mapping(data.get("endpointConfig"), "data.endpointConfig")
    urls: dict[str, str] = {}
    for key in ("production", "sandbox"):
        field = f"data.endpointConfig.{key}_endpoints"
        endpoint = endpoint_config.get(f"{key}_endpoints")
        if isinstance(endpoint, list):  # load-balanced shape: take the first
            endpoint = endpoint[0] if endpoint else None
            field += "[0]"
        url = reader.text(reader.mapping(endpoint, field).get("url"), f"{field}.url")
        urls[key] = _ws_url(reader, url, f"{field}.url") if url else ""

    operations = _api_operations(reader, data)
    asyncapi_name = next((n for n in ASYNCAPI_FILES if n in project.files), None)
    if asyncapi_name is not None:
        async_reader = _Reader(project.shown(asyncapi_name))
        async_doc = async_reader.mapping(
            _load_document(async_reader.file, project.files[asyncapi_name]), "", required=True
        )
        servers = async_reader.mapping(async_doc.get("servers"), "servers")
        for key in ("production", "sandbox"):
            if not urls[key] and key in servers:
                server = async_reader.mapping(servers[key], f"servers.{key}", required=True)
                urls[key] = _server_url(async_reader, server, f"servers.{key}")
        operations = _merge_operations(operations, _channel_operations(async_reader, async_doc))

    ca_pem = _certificates(project)
    definition = definition_pb2.ApiDefinition(
        id=f"{name}:{version}",
        name=name,
        version=version,
        context=context,
        api_type="WS",
        provider=reader.text(data.get("provider"), "data.provider", default="admin"),
        lifecycle_status=reader.text(
            data.get("lifeCycleStatus"), "data.lifeCycleStatus", default="PUBLISHED"
        ).upper(),
        operations=operations,
        scopes=_scopes(reader, data),
        policies=reader.texts(data.get("policies"), "data.policies"),
        api_throttling_policy=reader.text(
            data.get("apiThrottlingPolicy"), "data.apiThrottlingPolicy"
        ),
        deployments=_deployments(project),
        revision_id=reader.text(data.get("revisionId"), "data.revisionId"),
        source="adapter",
        security_scheme=reader.texts(data.get("securityScheme"), "data.securityScheme"),
        cors_configuration=_cors(reader, data),
    )
    for key, endpoint in (
        ("production", definition.production_endpoint),
        ("sandbox", definition.sandbox_endpoint),
    ):
        endpoint.url = urls[key]
        if urls[key].startswith("wss://"):
            endpoint.ca_cert_pem = ca_pem
    return definition


def load_zip(data: bytes, source: str = "project.zip") -> definition_pb2.ApiDefinition:
    """Zip bytes -> ApiDefinition. Raises ProjectError."""
    return parse_project(collect_zip(data, source))


def load_dir(root: Path) -> definition_pb2.ApiDefinition:
    """Project directory -> ApiDefinition. Raises ProjectError."""
    return parse_project(collect_dir(root))


def zip_dir(root: Path) -> bytes:
    """Pack a project directory as a zip with one top-level folder (for the CLI and tests)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, posixpath.join(root.name, path.relative_to(root).as_posix()))
    return buffer.getvalue()
