"""Reading a WSO2 API project (the apictl / API-M export format) into an ApiDefinition.

A project is ``api.yaml`` (or ``api.json``), ``Definitions/asyncapi.yaml`` (or ``.json``), an
optional ``deployment_environments.yaml`` and optional ``Endpoint-certificates/``. It arrives
as a zip (normally with one top-level folder) or as a directory. Everything below the
``collect_*`` readers is pure: files in, definition out, and every error names its file and field.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from wsgate_common.documents import DEFAULT_BUDGET, Budget, DocumentError, clip, load
from wsgate_common.resources import COMPRESSION_MODES, COMPRESSION_PROPERTY
from wsgate_proto import definition_pb2

MAX_ZIP_BYTES = 10 * 1024 * 1024
MAX_ENTRIES = 1000
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024
#: Topics (operations) one API may have; compiling is done on the event loop, so it is bounded
#: (the control plane's publisher API has the same limit).
MAX_OPERATIONS = 1000

API_FILES = ("api.yaml", "api.yml", "api.json")
ASYNCAPI_FILES = tuple(f"Definitions/asyncapi.{ext}" for ext in ("yaml", "yml", "json"))
ENV_FILES = ("deployment_environments.yaml", "deployment_environments.yml")
CERT_DIR = "Endpoint-certificates/"
VERBS = ("PUBLISH", "SUBSCRIBE")


class ProjectError(ValueError):
    """The project is not usable; says which file and which field, for a 400 answer."""

    def __init__(self, file: str, field: str, message: str, too_large: bool = False) -> None:
        if len(field) > 120:  # a field path holds document keys: never echo a long one
            field = field[:120] + "..."
        self.file = file
        self.field = field
        self.message = message
        #: A budget was hit (HTTP 413) rather than a mistake in the project (400).
        self.too_large = too_large
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[ProjectError], tuple[str, str, str, bool]]:
        # raised in a document worker process (load_in_worker): rebuilt from its parts
        return (type(self), (self.file, self.field, self.message, self.too_large))


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


def _load_document(name: str, content: bytes, budget: Budget) -> Any:
    """YAML or JSON within ``budget``: no aliases, bounded values, depth and time."""
    try:
        return load(content, budget, json_only=name.endswith(".json"))
    except DocumentError as exc:
        message = exc.message.removeprefix("is ")
        raise ProjectError(name, "", message, too_large=exc.too_large) from None


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
        raise reader.fail(field, f"{clip(url)} is not a ws:// or wss:// URL")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise reader.fail(field, f"{clip(url)} has an invalid port") from None
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
            raise reader.fail(f"{field}.verb", f"{clip(verb)} is not PUBLISH or SUBSCRIBE")
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


def _compression(reader: _Reader, data: dict[str, Any]) -> str:
    """The API's ``wsgate.compression`` additional property: "passthrough", "strip" or ""
    (unset). API-M 4.x writes ``additionalProperties`` as a list of ``{name, value, display}``
    and the same entries keyed by name in ``additionalPropertiesMap``; 3.x wrote
    ``additionalProperties`` as a name -> value mapping. Every place that names it must agree."""
    found: list[tuple[str, str]] = []  # (field, value as written)
    listed = data.get("additionalProperties")
    if isinstance(listed, dict):
        if COMPRESSION_PROPERTY in listed:
            field = f"data.additionalProperties.{COMPRESSION_PROPERTY}"
            found.append((field, reader.text(listed[COMPRESSION_PROPERTY], field)))
    else:
        for i, raw in enumerate(reader.listing(listed, "data.additionalProperties")):
            field = f"data.additionalProperties[{i}]"
            entry = reader.mapping(raw, field, required=True)
            if reader.text(entry.get("name"), f"{field}.name") == COMPRESSION_PROPERTY:
                value = reader.text(entry.get("value"), f"{field}.value")
                found.append((f"{field}.value", value))
    keyed = reader.mapping(data.get("additionalPropertiesMap"), "data.additionalPropertiesMap")
    if COMPRESSION_PROPERTY in keyed:
        field = f"data.additionalPropertiesMap.{COMPRESSION_PROPERTY}"
        raw = keyed[COMPRESSION_PROPERTY]
        if isinstance(raw, dict):
            field, raw = f"{field}.value", raw.get("value")
        found.append((field, reader.text(raw, field)))
    modes: list[str] = []
    for field, value in found:
        mode = value.lower()
        if mode not in COMPRESSION_MODES:
            raise reader.fail(
                field, f"{COMPRESSION_PROPERTY} {clip(value)} is not 'passthrough' or 'strip'"
            )
        if modes and mode != modes[0]:
            raise reader.fail(
                field, f"{COMPRESSION_PROPERTY} is {mode!r} here but {modes[0]!r} in {found[0][0]}"
            )
        modes.append(mode)
    return modes[0] if modes else ""


def _deployments(project: ProjectFiles, budget: Budget) -> list[definition_pb2.Deployment]:
    name = next((n for n in ENV_FILES if n in project.files), None)
    if name is None:
        return []
    reader = _Reader(project.shown(name))
    doc = _load_document(reader.file, project.files[name], budget)
    if doc is None:
        return []
    doc = reader.mapping(doc, "", required=True)
    kind = reader.text(doc.get("type"), "type", default="deployment_environments")
    if kind != "deployment_environments":
        raise reader.fail("type", f"{clip(kind)} is not deployment_environments")
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


def parse_project(
    project: ProjectFiles, budget: Budget = DEFAULT_BUDGET
) -> definition_pb2.ApiDefinition:
    """Build the ApiDefinition a project describes (nothing resolved yet; see compile.py).

    Raises:
        ProjectError: naming the file and field that is missing or wrong.
    """
    api_name = next((n for n in API_FILES if n in project.files), None)
    if api_name is None:
        raise ProjectError(project.shown("api.yaml"), "", "file is missing")
    reader = _Reader(project.shown(api_name))
    doc = reader.mapping(
        _load_document(reader.file, project.files[api_name], budget), "", required=True
    )
    kind = reader.text(doc.get("type"), "type", default="api")
    if kind != "api":
        raise reader.fail("type", f"{clip(kind)} is not an API project (expected 'api')")
    data = reader.mapping(doc.get("data"), "data", required=True)

    name = reader.text(data.get("name"), "data.name", required=True)
    version = reader.text(data.get("version"), "data.version", required=True)
    context = reader.text(data.get("context"), "data.context", required=True)
    api_type = reader.text(data.get("type"), "data.type", default="WS").upper()
    if api_type not in ("WS", "WEBSOCKET"):
        raise reader.fail("data.type", f"{clip(api_type)} is not a WebSocket (WS) API")
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
            _load_document(async_reader.file, project.files[asyncapi_name], budget),
            "",
            required=True,
        )
        servers = async_reader.mapping(async_doc.get("servers"), "servers")
        for key in ("production", "sandbox"):
            if not urls[key] and key in servers:
                server = async_reader.mapping(servers[key], f"servers.{key}", required=True)
                urls[key] = _server_url(async_reader, server, f"servers.{key}")
        operations = _merge_operations(operations, _channel_operations(async_reader, async_doc))
    if len(operations) > MAX_OPERATIONS:
        raise ProjectError(
            project.shown(asyncapi_name or api_name),
            "",
            f"has {len(operations)} operations, more than {MAX_OPERATIONS} (the limit)",
            too_large=True,
        )

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
        deployments=_deployments(project, budget),
        revision_id=reader.text(data.get("revisionId"), "data.revisionId"),
        source="adapter",
        security_scheme=reader.texts(data.get("securityScheme"), "data.securityScheme"),
        cors_configuration=_cors(reader, data),
        compression=_compression(reader, data),
    )
    for key, endpoint in (
        ("production", definition.production_endpoint),
        ("sandbox", definition.sandbox_endpoint),
    ):
        endpoint.url = urls[key]
        if urls[key].startswith("wss://"):
            endpoint.ca_cert_pem = ca_pem
    return definition


def load_zip(
    data: bytes, source: str = "project.zip", budget: Budget = DEFAULT_BUDGET
) -> definition_pb2.ApiDefinition:
    """Zip bytes -> ApiDefinition. Raises ProjectError."""
    return parse_project(collect_zip(data, source), budget)


def load_dir(root: Path, budget: Budget = DEFAULT_BUDGET) -> definition_pb2.ApiDefinition:
    """Project directory -> ApiDefinition. Raises ProjectError."""
    return parse_project(collect_dir(root), budget)


def zip_dir(root: Path) -> bytes:
    """Pack a project directory as a zip with one top-level folder (for the CLI and tests)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, posixpath.join(root.name, path.relative_to(root).as_posix()))
    return buffer.getvalue()
