"""Parsing WSO2 API projects (zip and directory) into ApiDefinitions, and every way they break."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapter import project
from adapter.project import ProjectError, load_dir, load_zip, zip_dir

ECHO = Path(__file__).resolve().parents[2] / "data" / "projects" / "EchoWebSocket-1.0.0"

MINIMAL_API = """\
type: api
version: v4.2.0
data:
  name: Mini
  context: /mini
  version: v1
  endpointConfig:
    endpoint_type: ws
    production_endpoints:
      url: ws://backend:9000/base
"""


def _zip(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _error(data: bytes) -> ProjectError:
    with pytest.raises(ProjectError) as info:
        load_zip(data)
    return info.value


def test_echo_project_from_zip() -> None:
    api = load_zip(zip_dir(ECHO))
    assert api.id == "EchoWebSocket:1.0.0"
    assert (api.name, api.version, api.context) == ("EchoWebSocket", "1.0.0", "/echowebsocket")
    assert api.api_type == "WS"
    assert api.source == "adapter"
    assert api.lifecycle_status == "PUBLISHED"
    assert api.production_endpoint.url == "ws://localhost:8765"
    assert api.sandbox_endpoint.url == "ws://localhost:8766"
    assert list(api.policies) == ["AsyncUnlimited"]
    assert api.api_throttling_policy == "Unlimited"
    assert [s.name for s in api.scopes] == ["notifications:read"]
    assert list(api.scopes[0].bindings) == ["admin"]
    ops = {(o.target, o.verb): o for o in api.operations}
    assert ops[("/notifications", "PUBLISH")].uri_mapping == "/notify"
    assert ops[("/public", "SUBSCRIBE")].auth_type == "None"
    assert list(ops[("/notifications", "SUBSCRIBE")].scopes) == ["notifications:read"]
    assert len(api.deployments) == 0


def test_directory_and_zip_agree() -> None:
    assert load_dir(ECHO) == load_zip(zip_dir(ECHO))
    # The parent folder holding exactly one project works too.
    assert load_dir(ECHO.parent) == load_dir(ECHO)


def test_files_at_zip_root_and_json_documents() -> None:
    api_json = (
        '{"type": "api", "data": {"name": "J", "context": "j", "version": "2",'
        ' "endpointConfig": {"production_endpoints": {"url": "wss://b.example:443/x"}}}}'
    )
    asyncapi_json = (
        '{"asyncapi": "2.0.0", "channels": {"/t": {"subscribe": {"x-scopes": ["s1"],'
        ' "x-uri-mapping": "/m", "x-auth-type": "None"}}}}'
    )
    api = load_zip(_zip({"api.json": api_json, "Definitions/asyncapi.json": asyncapi_json}))
    assert api.id == "J:2"
    assert api.production_endpoint.url == "wss://b.example:443/x"
    [op] = api.operations
    assert (op.target, op.verb, list(op.scopes), op.uri_mapping, op.auth_type) == (
        "/t",
        "SUBSCRIBE",
        ["s1"],
        "/m",
        "None",
    )


def test_channels_fill_in_when_api_yaml_has_no_operations_and_servers_give_endpoints() -> None:
    asyncapi = """\
asyncapi: 2.0.0
servers:
  production: {url: "prod.example:8080", protocol: ws}
  sandbox: {url: "wss://sand.example"}
channels:
  chat:
    publish: {x-uri-mapping: /in, x-scopes: [write]}
    subscribe: {x-uri-mapping: /out}
"""
    endpoint = "    production_endpoints:\n      url: ws://backend:9000/base\n"
    api_yaml = MINIMAL_API.replace(endpoint, "")
    api = load_zip(_zip({"P/api.yaml": api_yaml, "P/Definitions/asyncapi.yaml": asyncapi}))
    assert api.production_endpoint.url == "ws://prod.example:8080"
    assert api.sandbox_endpoint.url == "wss://sand.example"
    assert {(o.target, o.verb, o.uri_mapping) for o in api.operations} == {
        ("chat", "PUBLISH", "/in"),
        ("chat", "SUBSCRIBE", "/out"),
    }


def test_deployment_environments() -> None:
    envs = """\
type: deployment_environments
version: v4.2.0
data:
  - displayOnDevportal: true
    deploymentEnvironment: Default
    deploymentVhost: localhost
  - deploymentEnvironment: Edge
    deploymentVhost: edge.example.com
"""
    api = load_zip(_zip({"M/api.yaml": MINIMAL_API, "M/deployment_environments.yaml": envs}))
    assert [(d.name, d.vhost) for d in api.deployments] == [
        ("Default", "localhost"),
        ("Edge", "edge.example.com"),
    ]


def _cert_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_endpoint_certificates_go_to_wss_endpoints_only() -> None:
    pem = _cert_pem()
    api_yaml = MINIMAL_API.replace("ws://backend:9000/base", "wss://backend:9000/base")
    api_yaml += "    sandbox_endpoints:\n      url: ws://sandbox:9000\n"
    api = load_zip(_zip({"M/api.yaml": api_yaml, "M/Endpoint-certificates/backend.pem": pem}))
    assert api.production_endpoint.ca_cert_pem == pem.decode()
    assert api.sandbox_endpoint.ca_cert_pem == ""


def test_bad_certificate_is_named() -> None:
    err = _error(_zip({"M/api.yaml": MINIMAL_API, "M/Endpoint-certificates/x.pem": "garbage"}))
    assert err.file == "M/Endpoint-certificates/x.pem"


def test_not_a_zip() -> None:
    err = _error(b"this is not a zip")
    assert err.file == "project.zip"
    assert "zip" in err.message


def test_missing_api_yaml() -> None:
    err = _error(_zip({"P/Definitions/asyncapi.yaml": "asyncapi: 2.0.0"}))
    assert "api.yaml" in err.message


def test_yaml_syntax_error_names_line() -> None:
    broken = MINIMAL_API.replace("  context: /mini", "  context: [unclosed")
    err = _error(_zip({"P/api.yaml": broken}))
    assert err.file == "P/api.yaml"
    assert "line" in err.message


@pytest.mark.parametrize("field", ["name", "version", "context"])
def test_missing_required_field(field: str) -> None:
    lines = [ln for ln in MINIMAL_API.splitlines() if not ln.startswith(f"  {field}:")]
    err = _error(_zip({"P/api.yaml": "\n".join(lines)}))
    assert (err.file, err.field) == ("P/api.yaml", f"data.{field}")
    assert "required" in err.message


def test_http_endpoint_refused() -> None:
    err = _error(_zip({"P/api.yaml": MINIMAL_API.replace("ws://backend", "http://backend")}))
    assert err.field == "data.endpointConfig.production_endpoints.url"
    assert "ws://" in err.message


def test_non_websocket_api_refused() -> None:
    http_api = MINIMAL_API.replace("  version: v1", "  version: v1\n  type: HTTP")
    err = _error(_zip({"P/api.yaml": http_api}))
    assert err.field == "data.type"


def test_wrong_document_type() -> None:
    err = _error(_zip({"P/api.yaml": MINIMAL_API.replace("type: api", "type: apiProduct")}))
    assert err.field == "type"


def test_data_not_a_mapping() -> None:
    err = _error(_zip({"P/api.yaml": "type: api\ndata: [1, 2]\n"}))
    assert err.field == "data"


def test_bad_verb_named() -> None:
    api_yaml = MINIMAL_API + "  operations:\n    - target: /t\n      verb: GET\n"
    err = _error(_zip({"P/api.yaml": api_yaml}))
    assert err.field == "data.operations[0].verb"


def test_asyncapi_syntax_error_named() -> None:
    err = _error(_zip({"P/api.yaml": MINIMAL_API, "P/Definitions/asyncapi.yaml": "channels: ["}))
    assert err.file == "P/Definitions/asyncapi.yaml"


def test_zip_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(project, "MAX_ENTRIES", 3)
    many = {f"P/Docs/{i}.txt": "x" for i in range(4)}
    assert "entries" in _error(_zip({"P/api.yaml": MINIMAL_API, **many})).message

    monkeypatch.setattr(project, "MAX_FILE_BYTES", 1000)
    bomb = MINIMAL_API + "#" + "x" * 5000 + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("P/api.yaml", bomb)
    err = _error(buffer.getvalue())
    assert err.file == "P/api.yaml"
    assert "larger" in err.message

    monkeypatch.setattr(project, "MAX_ZIP_BYTES", 10)
    assert "larger" in _error(_zip({"P/api.yaml": MINIMAL_API})).message


def test_directory_without_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError):
        load_dir(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(ECHO, copy)
    (copy / "api.yaml").write_text("type: api\ndata:\n  name: X\n")
    with pytest.raises(ProjectError) as info:
        load_dir(copy)
    assert info.value.field == "data.version"


def test_security_scheme_and_cors_configuration() -> None:
    api_yaml = MINIMAL_API + (
        "  securityScheme: [oauth2, api_key, oauth_basic_auth_api_key_mandatory]\n"
        "  corsConfiguration:\n"
        "    corsConfigurationEnabled: true\n"
        "    accessControlAllowOrigins: ['https://app.example.com', '*']\n"
        "    accessControlAllowCredentials: false\n"
        "    accessControlAllowHeaders: [authorization]\n"
    )
    api = load_zip(_zip({"api.yaml": api_yaml}))
    assert list(api.security_scheme) == ["oauth2", "api_key", "oauth_basic_auth_api_key_mandatory"]
    assert api.cors_configuration.cors_configuration_enabled is True
    assert list(api.cors_configuration.access_control_allow_origins) == [
        "https://app.example.com",
        "*",
    ]


def test_no_security_scheme_nor_cors_means_defaults() -> None:
    api = load_zip(_zip({"api.yaml": MINIMAL_API}))
    assert list(api.security_scheme) == []
    assert api.cors_configuration.cors_configuration_enabled is False
    assert list(api.cors_configuration.access_control_allow_origins) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("  securityScheme: oauth2\n", "data.securityScheme"),
        ("  corsConfiguration: [a]\n", "data.corsConfiguration"),
        (
            "  corsConfiguration: {corsConfigurationEnabled: maybe}\n",
            "data.corsConfiguration.corsConfigurationEnabled",
        ),
        (
            "  corsConfiguration: {accessControlAllowOrigins: '*'}\n",
            "data.corsConfiguration.accessControlAllowOrigins",
        ),
    ],
)
def test_bad_security_fields_are_named(extra: str, field: str) -> None:
    error = _error(_zip({"api.yaml": MINIMAL_API + extra}))
    assert error.field == field
