"""deploy/: the Kubernetes manifests, the Dockerfile and supervisord.conf.

The manifests are rendered here the way ``kubectl apply -k`` would (a small kustomize subset:
``resources``, ``namespace`` and strategic-merge ``patches``), validated against the Kubernetes
API schema with kubernetes-validate, and checked against the code they deploy: every ``WSGATE_*``
variable is one the component's settings class reads, ports and probes are the component's
listeners, addresses lead through a Service to the right listener, and selectors match.

Each check returns a list of problems; the last tests feed it broken manifests to prove it fails.
"""

from __future__ import annotations

import base64
import configparser
import copy
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from adapter.settings import AdapterSettings
from control_plane.settings import ControlPlaneSettings
from enforcer.settings import EnforcerSettings
from router.settings import RouterSettings
from wsgate.cli import COMMANDS
from wsgate.echo import EchoSettings
from wsgate_common.settings import CommonSettings

Doc = dict[str, Any]

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/postgres-redis")
EXAMPLES = K8S / "examples"
KUBERNETES_VERSION = "1.30"
IMAGE = "wsgate"

SETTINGS: dict[str, type[CommonSettings]] = {
    "control-plane": ControlPlaneSettings,
    "adapter": AdapterSettings,
    "enforcer": EnforcerSettings,
    "router": RouterSettings,
    "echo-backend": EchoSettings,
}
# What each component listens on: settings field of the port -> protocol.
LISTENERS: dict[str, dict[str, str]] = {
    "control-plane": {"cp_port": "HTTPS"},
    "adapter": {
        "adapter_rest_port": "HTTPS",
        "adapter_xds_port": "GRPC",
        "adapter_deploy_port": "GRPC",
    },
    "enforcer": {"enforcer_grpc_port": "GRPC", "enforcer_http_port": "HTTP"},
    "router": {"router_port": "HTTP", "router_tls_port": "HTTPS"},
}
# Every HTTP(S) listener answers these (README.md); readiness asks /ready, liveness /health.
PROBE_PATHS = {"readinessProbe": "/ready", "livenessProbe": "/health"}
# Address variables: which component's which listener they must reach.
ADDRESSES: dict[str, tuple[str, str]] = {
    "WSGATE_CP_ADAPTER_ADDRESS": ("adapter", "adapter_deploy_port"),
    "WSGATE_XDS_ADDRESS": ("adapter", "adapter_xds_port"),
    "WSGATE_ENFORCER_ADDRESS": ("enforcer", "enforcer_grpc_port"),
    "WSGATE_ENFORCER_HTTP_URL": ("enforcer", "enforcer_http_port"),
}
# URLs of services that are not wsgate components: the host must be a Service with that port.
SERVICE_URLS = {"WSGATE_DATABASE_URL", "WSGATE_RATELIMIT_REDIS_URL"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet"}


def variables(settings: type[CommonSettings]) -> set[str]:
    """The environment variables a settings class reads (``env_prefix`` + field name)."""
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


# -- rendering: the kustomize subset the manifests use ---------------------------------------


def load_yaml(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def strategic_merge(base: Any, patch: Any) -> Any:
    """Merge ``patch`` into ``base``: maps recursively, lists of named maps by ``name``,
    anything else replaced; ``null`` deletes a key."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = value
        return merged
    named = (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    )
    if named:
        merged_list = list(base)
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                i = index[item["name"]]
                merged_list[i] = strategic_merge(merged_list[i], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def kustomization(directory: Path) -> Doc:
    spec: Doc = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
    unsupported = set(spec) - supported
    assert not unsupported, f"{directory}: this test's renderer does not support {unsupported}"
    return spec


def render(directory: Path) -> list[Doc]:
    """What ``kubectl kustomize directory`` prints, for the features the manifests use."""
    spec = kustomization(directory)
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        docs += render(target) if target.is_dir() else load_yaml(target)
    for patch_entry in spec.get("patches", []):
        assert set(patch_entry) == {"path"}, f"{directory}: only `path:` patches are supported"
        for patch in load_yaml(directory / patch_entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            matches = [i for i, doc in enumerate(docs) if identity(doc) == key]
            assert len(matches) == 1, f"{directory}: patch target {key} found {len(matches)}x"
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    for image in spec.get("images", []):
        for doc in docs:
            if doc["kind"] in WORKLOADS:
                pod = pod_spec(doc)
                for container in pod.get("initContainers", []) + pod["containers"]:
                    container["image"] = set_image(container["image"], image)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def referenced_files(directory: Path) -> set[Path]:
    spec = kustomization(directory)
    files = {directory / "kustomization.yaml"}
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        files |= referenced_files(target) if target.is_dir() else {target}
    files |= {(directory / patch["path"]).resolve() for patch in spec.get("patches", [])}
    return {path.resolve() for path in files}


def image_name(image: str) -> str:
    """``registry:5000/team/wsgate:1.0@sha256:...`` -> ``registry:5000/team/wsgate``."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def set_image(image: str, change: Doc) -> str:
    """kustomize's ``images:`` entry (name, newName, newTag, digest) applied to one image."""
    if image_name(image) != change["name"]:
        return image
    name = str(change.get("newName", change["name"]))
    if "digest" in change:
        return f"{name}@{change['digest']}"
    tag = change.get("newTag") or (image.split("@")[0][len(image_name(image)) + 1 :] or None)
    return f"{name}:{tag}" if tag else name


def identity(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


RENDERED: dict[str, list[Doc]] = {name: render(K8S / name) for name in KUSTOMIZATIONS}
EXAMPLE_DOCS: list[tuple[str, Doc]] = [
    (f"examples/{path.name}", doc)
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in load_yaml(path)
]


# -- the checks: each returns a list of problems ---------------------------------------------


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def is_wsgate(container: Doc) -> bool:
    repository = image_name(container["image"])
    return repository.rsplit("/", 1)[-1] == IMAGE and "command" not in container


def secret_value(docs: list[Doc], name: str, key: str) -> str | None:
    secret = by_kind(docs, "Secret").get(name)
    if secret is None:
        return None
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    if key in secret.get("data", {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def container_env(docs: list[Doc], container: Doc) -> tuple[dict[str, str | None], list[str]]:
    """Name -> value of every variable the container gets (None: a value not in the manifests),
    and the problems met resolving them (a ConfigMap or Secret key that is not there)."""
    env: dict[str, str | None] = {}
    problems: list[str] = []
    config_maps = by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in config_maps:
                problems.append(f"envFrom ConfigMap {name} does not exist")
                continue
            env.update({k: str(v) for k, v in config_maps[name].get("data", {}).items()})
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            secret = by_kind(docs, "Secret").get(name)
            if secret is None:
                problems.append(f"envFrom Secret {name} does not exist")
                continue
            keys = {**secret.get("data", {}), **secret.get("stringData", {})}
            env.update({key: secret_value(docs, name, key) for key in keys})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry.get("valueFrom", {})
        if "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            env[entry["name"]] = secret_value(docs, name, key)
            if env[entry["name"]] is None:
                problems.append(f"{entry['name']}: Secret {name} has no key {key}")
        elif "configMapKeyRef" in ref:
            name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            data = config_maps.get(name, {}).get("data", {})
            env[entry["name"]] = str(data[key]) if key in data else None
            if key not in data:
                problems.append(f"{entry['name']}: ConfigMap {name} has no key {key}")
        else:
            env[entry["name"]] = None
    return env, problems


def effective(component: str, env: dict[str, str | None], field: str) -> Any:
    """The value the component uses for ``field``: from the environment, else the default."""
    value = env.get(f"WSGATE_{field.upper()}")
    if value is not None:
        return value
    return SETTINGS[component].model_fields[field].default


def wsgate_containers(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (doc["metadata"]["name"], container)
        for doc in docs
        if doc["kind"] in WORKLOADS
        for container in pod_spec(doc)["containers"]
        if is_wsgate(container)
    ]


def component_of(container: Doc) -> str:
    return str(container.get("args", ["?"])[0])


def port_number(container: Doc, port: int | str) -> int | None:
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry["containerPort"]):
            return int(entry["containerPort"])
    return None


def check_env(docs: list[Doc]) -> list[str]:
    """Every variable a wsgate container gets is one its component reads."""
    problems: list[str] = []
    for workload, container in wsgate_containers(docs):
        component = component_of(container)
        if component not in COMMANDS or component not in LISTENERS:
            problems.append(f"{workload}: args {container.get('args')} name no component")
            continue
        env, unresolved = container_env(docs, container)
        problems += [f"{workload}: {problem}" for problem in unresolved]
        known = variables(SETTINGS[component])
        problems += [
            f"{workload}: {component} does not read {name}" for name in sorted(set(env) - known)
        ]
    return problems


def check_ports_and_probes(docs: list[Doc]) -> list[str]:
    """Container ports are exactly the component's listeners; probes ask /ready and /health on
    an HTTP(S) listener with its scheme."""
    problems: list[str] = []
    for workload, container in wsgate_containers(docs):
        component = component_of(container)
        if component not in LISTENERS:
            continue
        env, _ = container_env(docs, container)
        listeners = {int(effective(component, env, f)): p for f, p in LISTENERS[component].items()}
        declared = {int(p["containerPort"]) for p in container.get("ports", [])}
        if declared != set(listeners):
            problems.append(f"{workload}: container ports {declared} != listeners {listeners}")
        for kind, path in PROBE_PATHS.items():
            get = container.get(kind, {}).get("httpGet")
            if get is None:
                problems.append(f"{workload}: no {kind} httpGet")
                continue
            number = port_number(container, get["port"])
            scheme = get.get("scheme", "HTTP")
            if get["path"] != path:
                problems.append(f"{workload}: {kind} asks {get['path']}, not {path}")
            if number not in listeners or listeners[number] != scheme:
                problems.append(
                    f"{workload}: {kind} {scheme} port {get['port']} is not a {scheme} listener "
                    f"of the {component} ({listeners})"
                )
    return problems


def selected_workloads(docs: list[Doc], selector: dict[str, str]) -> list[Doc]:
    return [
        doc
        for doc in docs
        if doc["kind"] in WORKLOADS
        and selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    ]


def check_services(docs: list[Doc]) -> list[str]:
    """Every Service selects one workload, and every targetPort is one of its container ports."""
    problems: list[str] = []
    for name, service in by_kind(docs, "Service").items():
        targets = selected_workloads(docs, service["spec"]["selector"])
        if len(targets) != 1:
            problems.append(f"Service {name} selects {len(targets)} workloads")
            continue
        containers = pod_spec(targets[0])["containers"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if all(port_number(c, target) is None for c in containers):
                problems.append(f"Service {name} port {port['port']}: no container port {target}")
    for kind in ("PodDisruptionBudget", *WORKLOADS):
        for name, doc in by_kind(docs, kind).items():
            selector = doc["spec"]["selector"]["matchLabels"]
            if not selected_workloads(docs, selector):
                problems.append(f"{kind} {name}: selector {selector} matches no pod template")
    for name, hpa in by_kind(docs, "HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind(docs, ref["kind"]).get(ref["name"])
        if target is None:
            problems.append(f"HPA {name}: {ref['kind']} {ref['name']} does not exist")
        elif any(
            "cpu" not in c.get("resources", {}).get("requests", {})
            for c in pod_spec(target)["containers"]
        ):
            problems.append(f"HPA {name}: {ref['name']} has a container without a CPU request")
    return problems


def resolve_address(docs: list[Doc], value: str) -> tuple[Doc | None, Doc | None, str]:
    """The Service a ``host:port`` or URL names, the workload behind it and its targetPort."""
    if "://" in value:
        parts = urlsplit(value)
        host, port = parts.hostname or "", parts.port
    else:
        host, _, port_text = value.rpartition(":")
        port = int(port_text) if port_text.isdigit() else None
    service = by_kind(docs, "Service").get(host.split(".")[0])
    if service is None:
        return None, None, f"no Service named {host!r}"
    ports = [p for p in service["spec"]["ports"] if p["port"] == port]
    if not ports:
        return service, None, f"Service {host} has no port {port}"
    workloads = selected_workloads(docs, service["spec"]["selector"])
    target = ports[0].get("targetPort", port)
    return service, workloads[0] if workloads else None, str(target)


def check_addresses(docs: list[Doc]) -> list[str]:
    """Each address variable leads through a Service to the listener it is meant for, and every
    component that reads one has it set (its default, localhost, is wrong in a pod)."""
    problems: list[str] = []
    for workload, container in wsgate_containers(docs):
        component = component_of(container)
        if component not in LISTENERS:
            continue
        env, _ = container_env(docs, container)
        for name, (peer, field) in ADDRESSES.items():
            if name not in variables(SETTINGS[component]):
                continue
            value = env.get(name)
            if value is None:
                problems.append(f"{workload}: {name} is not set")
                continue
            _, target, detail = resolve_address(docs, value)
            if target is None:
                problems.append(f"{workload}: {name}={value}: {detail}")
                continue
            peers = [c for c in pod_spec(target)["containers"] if component_of(c) == peer]
            if not peers:
                problems.append(f"{workload}: {name}={value} leads to no {peer}")
                continue
            peer_env, _ = container_env(docs, peers[0])
            want = int(effective(peer, peer_env, field))
            got = port_number(peers[0], int(detail) if detail.isdigit() else detail)
            if got != want:
                problems.append(
                    f"{workload}: {name}={value} reaches port {got}, not {field} {want}"
                )
        for name in SERVICE_URLS & env.keys():
            value = env[name]
            if value and not value.startswith("sqlite"):
                _, target, detail = resolve_address(docs, value)
                if target is None:
                    problems.append(f"{workload}: {name}: {detail}")
    return problems


def check_security(docs: list[Doc]) -> list[str]:
    """Non-root pods, requests and limits everywhere, and the wsgate containers' writable paths
    (data dir, SQLite database) on volumes, since their root filesystem is read-only."""
    problems: list[str] = []
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        name, spec = doc["metadata"]["name"], pod_spec(doc)
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: pod without runAsNonRoot")
        for container in spec.get("initContainers", []) + spec["containers"]:
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if {"cpu", "memory"} - resources.get(part, {}).keys():
                    problems.append(f"{name}/{container['name']}: cpu/memory {part} missing")
            if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{container['name']}: allowPrivilegeEscalation not false")
        for container in spec["containers"]:
            if not is_wsgate(container) or component_of(container) not in LISTENERS:
                continue
            if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                problems.append(f"{name}: wsgate container without readOnlyRootFilesystem")
            env, _ = container_env(docs, container)
            component = component_of(container)
            writable = {
                PurePosixPath(m["mountPath"])
                for m in container.get("volumeMounts", [])
                if not m.get("readOnly")
            }
            needed = {PurePosixPath(str(effective(component, env, "data_dir")))}
            url = env.get("WSGATE_DATABASE_URL") or ""
            if url.startswith("sqlite:///"):
                needed.add(PurePosixPath(url.removeprefix("sqlite:///")).parent)
            for path in sorted(needed - writable):
                problems.append(f"{name}: {path} is not a writable volume mount")
    return problems


CHECKS = {
    "env": check_env,
    "ports-probes": check_ports_and_probes,
    "services": check_services,
    "addresses": check_addresses,
    "security": check_security,
}


# -- the tests -------------------------------------------------------------------------------


SCHEMA_CASES = [
    pytest.param(doc, id=f"{source}:{doc['kind']}/{doc['metadata']['name']}")
    for source, docs in RENDERED.items()
    for doc in docs
] + [
    pytest.param(doc, id=f"{source}:{doc['kind']}/{doc['metadata']['name']}")
    for source, doc in EXAMPLE_DOCS
]


@pytest.mark.parametrize("doc", SCHEMA_CASES)
def test_resource_is_valid_for_kubernetes(doc: Doc) -> None:
    # strict: unknown fields (a misspelt key) fail too.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("source", KUSTOMIZATIONS)
def test_rendering_has_the_four_components(source: str) -> None:
    docs = RENDERED[source]
    assert len({identity(doc) for doc in docs}) == len(docs), "a resource is defined twice"
    assert sorted(component_of(c) for _, c in wsgate_containers(docs)) == sorted(LISTENERS)
    replicas = {name: doc["spec"]["replicas"] for name, doc in by_kind(docs, "Deployment").items()}
    assert replicas["wsgate-control-plane"] == replicas["wsgate-adapter"] == 1
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {
        "wsgate"
    }
    assert {"wsgate-router", "wsgate-enforcer"} <= by_kind(docs, "PodDisruptionBudget").keys()
    assert "wsgate-router" in by_kind(docs, "HorizontalPodAutoscaler")


def test_overlay_adds_postgres_and_redis() -> None:
    docs = RENDERED["overlays/postgres-redis"]
    assert "wsgate-postgres" in by_kind(docs, "StatefulSet")
    assert "wsgate-redis" in by_kind(docs, "Deployment")
    cp = next(c for _, c in wsgate_containers(docs) if component_of(c) == "control-plane")
    env, _ = container_env(docs, cp)
    assert (env["WSGATE_DATABASE_URL"] or "").startswith("postgresql+psycopg://")
    router = next(c for _, c in wsgate_containers(docs) if component_of(c) == "router")
    router_env = container_env(docs, router)[0]
    # The router reads it (check_env, with no variable exempted): global throttling in Redis.
    assert (router_env["WSGATE_RATELIMIT_REDIS_URL"] or "").startswith("redis")
    # Fail-open admits limit / expected routers per router: sized for the most routers the
    # autoscaler may run, so together they never exceed a limit while Redis is down.
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["wsgate-router"]
    assert router_env["WSGATE_RATELIMIT_EXPECTED_ROUTERS"] == str(hpa["spec"]["maxReplicas"])


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("source", KUSTOMIZATIONS)
def test_wiring(source: str, check: str) -> None:
    assert CHECKS[check](copy.deepcopy(RENDERED[source])) == []


@pytest.mark.parametrize(
    ("image", "change", "expected"),
    [
        (
            "wsgate:0.1.0",
            {"name": "wsgate", "newName": "r.example/wsgate"},
            "r.example/wsgate:0.1.0",
        ),
        ("wsgate:0.1.0", {"name": "wsgate", "newTag": "0.2.0"}, "wsgate:0.2.0"),
        ("wsgate:0.1.0", {"name": "wsgate", "digest": "sha256:ab"}, "wsgate@sha256:ab"),
        ("r:5000/wsgate", {"name": "r:5000/wsgate", "newTag": "1"}, "r:5000/wsgate:1"),
        ("redis:7", {"name": "wsgate", "newTag": "0.2.0"}, "redis:7"),
    ],
    ids=["new-name", "new-tag", "digest", "registry-port", "other-image"],
)
def test_images_transformer(image: str, change: Doc, expected: str) -> None:
    assert set_image(image, change) == expected


def test_every_manifest_is_used() -> None:
    used: set[Path] = set()
    for name in KUSTOMIZATIONS:
        used |= referenced_files(K8S / name)
    files = {path.resolve() for path in K8S.rglob("*.yaml")}
    examples = {path.resolve() for path in EXAMPLES.glob("*.yaml")}
    assert files - used - examples == set()
    assert used <= files


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("source", KUSTOMIZATIONS)
def test_renderer_agrees_with_kubectl_kustomize(source: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
            return sorted((normal(v) for v in value), key=lambda v: str(v["name"]))
        if isinstance(value, list):
            return [normal(v) for v in value]
        return value

    theirs = {identity(doc): normal(doc) for doc in yaml.safe_load_all(result.stdout) if doc}
    ours = {identity(doc): normal(doc) for doc in RENDERED[source]}
    assert ours == theirs


# -- the checks fail on broken manifests -----------------------------------------------------


def mutated(mutate: Any) -> list[Doc]:
    docs = copy.deepcopy(RENDERED["base"])
    mutate(docs)
    return docs


def router_container(docs: list[Doc]) -> Doc:
    return next(c for _, c in wsgate_containers(docs) if component_of(c) == "router")


def rename_key(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


BROKEN = {
    "misspelt-env-var": (
        "env",
        lambda docs: (
            router_container(docs)
            .setdefault("env", [])
            .append({"name": "WSGATE_ROUTER_PROT", "value": "9090"})
        ),
    ),
    "misspelt-configmap-key": (
        "env",
        lambda docs: rename_key(
            by_kind(docs, "ConfigMap")["wsgate-router"]["data"],
            "WSGATE_XDS_ADDRESS",
            "WSGATE_XDS_ADDR",
        ),
    ),
    "wrong-probe-path": (
        "ports-probes",
        lambda docs: router_container(docs)["readinessProbe"]["httpGet"].update(path="/readyz"),
    ),
    "probe-wrong-scheme": (
        "ports-probes",
        lambda docs: router_container(docs)["livenessProbe"]["httpGet"].update(port="wss"),
    ),
    "port-not-a-listener": (
        "ports-probes",
        lambda docs: router_container(docs)["ports"][0].update(containerPort=8080),
    ),
    "selector-typo": (
        "services",
        lambda docs: by_kind(docs, "Service")["wsgate-enforcer"]["spec"]["selector"].update(
            {"app.kubernetes.io/name": "wsgate-enforcr"}
        ),
    ),
    "target-port-typo": (
        "services",
        lambda docs: by_kind(docs, "Service")["wsgate-adapter"]["spec"]["ports"][1].update(
            targetPort="xsd"
        ),
    ),
    "xds-address-to-deploy-port": (
        "addresses",
        lambda docs: by_kind(docs, "ConfigMap")["wsgate-router"]["data"].update(
            WSGATE_XDS_ADDRESS="wsgate-adapter:18001"
        ),
    ),
    "enforcer-address-unset": (
        "addresses",
        lambda docs: by_kind(docs, "ConfigMap")["wsgate-router"]["data"].pop(
            "WSGATE_ENFORCER_ADDRESS"
        ),
    ),
    "data-dir-not-mounted": (
        "security",
        lambda docs: by_kind(docs, "ConfigMap")["wsgate-common"]["data"].update(
            WSGATE_DATA_DIR="/data"
        ),
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_checks_catch_broken_manifests(case: str) -> None:
    check, mutate = BROKEN[case]
    assert CHECKS[check](mutated(mutate)) != []


def test_schema_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(by_kind(RENDERED["base"], "Deployment")["wsgate-router"])
    rename_key(pod_spec(deployment)["containers"][0], "readinessProbe", "readinesProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# -- supervisord.conf ------------------------------------------------------------------------


def supervisord_programs() -> dict[str, configparser.SectionProxy]:
    config = configparser.RawConfigParser()
    config.read(DEPLOY / "supervisord.conf")
    return {
        section.removeprefix("program:"): config[section]
        for section in config.sections()
        if section.startswith("program:")
    }


def environment(spec: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', spec))


@pytest.mark.parametrize("program", sorted(supervisord_programs()))
def test_supervisord_program_runs_a_wsgate_component(program: str) -> None:
    section = supervisord_programs()[program]
    executable, command, *_ = shlex.split(section["command"])
    assert PurePosixPath(executable).name == "wsgate"
    assert command in COMMANDS and command not in ("up", "mg"), command
    assert command in SETTINGS
    unknown = environment(section.get("environment", "")).keys() - variables(SETTINGS[command])
    assert unknown == set(), f"{program}: {command} does not read {unknown}"


def test_supervisord_group_and_common_environment() -> None:
    config = configparser.RawConfigParser()
    config.read(DEPLOY / "supervisord.conf")
    group = {p.strip() for p in config["group:wsgate"]["programs"].split(",")}
    assert group == set(supervisord_programs())
    common = environment(config["supervisord"]["environment"])
    assert common.keys() - {"PYTHONUNBUFFERED"} <= variables(CommonSettings)


# -- Dockerfile ------------------------------------------------------------------------------


def logical_lines(path: Path) -> list[str]:
    """Lines with backslash continuations joined and whitespace collapsed."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [" ".join(line.split()) for line in text.splitlines()]


def build_steps(path: Path) -> dict[str, Any]:
    """The proto build as a Makefile or Dockerfile spells it: grpcio-tools requirement, protoc
    options and inputs, marker files touched, and the package install."""
    text = " && ".join(logical_lines(path))
    protoc = re.search(r"-m grpc_tools\.protoc (.*?)(?: &&|$)", text)
    assert protoc, f"{path.name}: no grpc_tools.protoc call"
    args = protoc.group(1).split()
    touched = re.search(r"touch ((?:\S+/wsgate_proto/\S+ ?)+)", text)
    assert touched, f"{path.name}: no touch of the generated package's marker files"
    tools = re.search(r"install -q ('grpcio-tools[^']*')", text)
    assert tools, f"{path.name}: no grpcio-tools install"
    return {
        "grpcio-tools": tools.group(1),
        "protoc options": sorted(a for a in args if a.startswith("-")),
        "protoc inputs": [a for a in args if not a.startswith("-")],
        "markers": sorted(PurePosixPath(p).name for p in touched.group(1).split()),
        "swap": "rm -rf wsgate_proto && mv .proto-out/wsgate_proto wsgate_proto" in text,
    }


def test_dockerfile_builds_protos_like_the_makefile() -> None:
    make, docker = build_steps(ROOT / "Makefile"), build_steps(ROOT / "Dockerfile")
    assert make.pop("protoc inputs") == ["$(PROTOS)"]
    assert "PROTOS := $(wildcard proto/wsgate_proto/*.proto)" in logical_lines(ROOT / "Makefile")
    assert docker.pop("protoc inputs") == ["proto/wsgate_proto/*.proto"]
    assert docker == make


def test_dockerfile_runs_wsgate_as_non_root() -> None:
    lines = logical_lines(ROOT / "Dockerfile")
    assert [line for line in lines if line.startswith("FROM ")][-1] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["wsgate"]' in lines
    user = [line for line in lines if line.startswith("USER ")][-1]
    assert re.fullmatch(r"USER [1-9]\d*(:\d+)?", user), "numeric, so runAsNonRoot can check it"
    installs = [line for line in lines if "pip install" in line and "'.[" in line]
    assert installs, "the package itself is installed (pip install .)"
    # The init containers run this image too (its `sh`), and every wsgate pod runs as its user.
    for docs in RENDERED.values():
        for doc in docs:
            if doc["kind"] in WORKLOADS:
                for container in pod_spec(doc).get("initContainers", []):
                    assert image_name(container["image"]).rsplit("/", 1)[-1] == IMAGE
    uid = int(user.split()[1].split(":")[0])
    pods = [pod_spec(d) for d in RENDERED["base"] if d["kind"] == "Deployment"]
    assert {p["securityContext"]["runAsUser"] for p in pods} == {uid}
