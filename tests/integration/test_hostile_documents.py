"""Issue 12, items 1-2: YAML bombs and huge documents posted to the real control plane and
adapter processes. ``/health`` is polled meanwhile and must keep answering within 100 ms; the
upload answers 400/413 quickly instead of hanging the process.

Before issue 12 the same requests stalled /health for 20+ s (the control plane was killed by its
supervisor). The bound is 100 ms above the process's own idle /health latency (the adapter's
is ~50 ms on this host), with one outlier allowed for scheduler noise, under 500 ms."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.hostile_docs import big_asyncapi, project_zip, yaml_bomb
from tests.integration.control_plane_flow import closed_address, control_plane
from tests.procs import free_port, http_ok, running

pytestmark = pytest.mark.integration

HEALTH_LIMIT = 0.1
#: One answer may be late by machine noise (this host runs many test processes on 2 cores),
#: but never by this much: a loop blocked by a parse stalls for seconds.
HEALTH_OUTLIER = 0.5


class HealthProbe:
    """Polls a /health URL from a thread on a kept-alive connection; records each latency."""

    def __init__(self, url: str, verify: ssl.SSLContext) -> None:
        self.url = url
        self.verify = verify
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(verify=self.verify, timeout=5) as client:
            client.get(self.url)  # the TLS handshake is not what is measured
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.get(self.url)
                    if answer.status_code != 200:
                        self.failures.append(f"status {answer.status_code}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def check(self, what: str, baseline: float = 0.0) -> None:
        """Every answer within HEALTH_LIMIT more than the process's own idle latency
        (``baseline``), save at most one outlier, which stays under HEALTH_OUTLIER."""
        assert not self.failures, (what, self.failures[:3])
        assert len(self.latencies) >= 3, what
        slow = sorted(self.latencies)[-3:]
        message = f"{what}: slowest /health answers: {slow} (idle: {baseline:.3f})"
        assert slow[-2] < baseline + HEALTH_LIMIT, message
        assert slow[-1] < HEALTH_OUTLIER, message

    def median(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2]


def _idle_latency(url: str, verify: ssl.SSLContext) -> float:
    """The median /health latency with nothing else going on."""
    with HealthProbe(url, verify) as probe:
        time.sleep(0.6)
    return probe.median()


@contextmanager
def _probing(url: str, verify: ssl.SSLContext) -> Iterator[HealthProbe]:
    with HealthProbe(url, verify) as probe:
        time.sleep(0.2)
        yield probe
        time.sleep(0.2)


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_control_plane_stays_responsive_under_bomb_and_huge_import(tmp_path: Path) -> None:
    port = free_port()
    with control_plane(tmp_path, port, closed_address()) as (proc, client):
        tls = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        idle = _idle_latency(f"https://127.0.0.1:{port}/health", tls)
        for name, document, statuses in (
            ("bomb", yaml_bomb(), {400}),
            ("huge", big_asyncapi(), {400, 413}),
        ):
            with _probing(f"https://127.0.0.1:{port}/health", tls) as probe:
                answer, took = _timed(
                    lambda document=document: client.post(
                        "/apis/import-asyncapi",
                        files={"file": ("asyncapi.yaml", document, "application/yaml")},
                        data={"additionalProperties": '{"context": "/hostile"}'},
                    )
                )
            assert answer.status_code in statuses, (name, answer.text[:300])
            assert len(answer.content) < 1000, name
            assert took < 5, (name, took)
            probe.check(name, idle)
        assert proc.alive()
        assert client.get("/apis").json()["count"] == 0


def test_adapter_stays_responsive_under_bomb_and_huge_project(tmp_path: Path) -> None:
    rest = free_port()
    args = ["adapter", "--host", "127.0.0.1", "--rest-port", str(rest)]
    args += ["--xds-port", str(free_port()), "--deploy-port", str(free_port())]
    env = {"WSGATE_DATA_DIR": str(tmp_path), "WSGATE_ADAPTER_USERS": "admin:admin"}
    with running(
        "adapter", args, env, tmp_path, lambda: http_ok(f"https://127.0.0.1:{rest}/ready")
    ) as proc:
        tls = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        idle = _idle_latency(f"https://127.0.0.1:{rest}/health", tls)
        base = f"https://127.0.0.1:{rest}/api/mgw/adapter/0.1"
        with httpx.Client(base_url=base, auth=("admin", "admin"), verify=tls, timeout=30) as c:
            for name, archive, statuses in (
                ("bomb", project_zip(yaml_bomb()), {400}),
                ("huge", project_zip(big_asyncapi()), {400, 413}),
            ):
                with _probing(f"https://127.0.0.1:{rest}/health", tls) as probe:
                    answer, took = _timed(
                        lambda archive=archive: c.post(
                            "/apis", files={"file": ("p.zip", archive, "application/zip")}
                        )
                    )
                assert answer.status_code in statuses, (name, answer.text[:300])
                assert len(answer.content) < 1000, name
                assert took < 5, (name, took)
                probe.check(name, idle)
            assert proc.alive()
            assert c.get("/apis").json()["count"] == 0
