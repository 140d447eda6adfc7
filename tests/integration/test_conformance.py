"""Transparency: apart from what wsgate enforces, a client sees what the backend would show it.

The Autobahn WebSocket test suite (its own case files, run from Python 3 by the ``kosoku``
package) is run twice against the same ``wsgate echo-backend`` process: (a) directly, and
(b) through the router, ``ws://127.0.0.1:<router>/conformance/1.0.0/autobahn``. Per case the
results must be identical: the message-exchange verdict, the closing-handshake verdict, the
close code the client got and whether the close was clean, and the WebSocket headers of the
101 answer (see tests/conformance/compare.py).

Case selection: the whole suite, 517 cases: 1-7 (framing, pings, reserved bits and opcodes,
fragmentation, UTF-8, closing), 9 (4-16 MiB messages, 1000-message round trips), 10, and 12/13
(permessage-deflate), none excluded. It fits: 12.x/13.x take < 1 s because the echo backend
declines permessage-deflate (so they check that the extension negotiation through the router
ends the same way: UNIMPLEMENTED both ways), 9.x ~2 s; the rest is the cases' own timers (6.4.x
wait 2 s each, 5.19/5.20 1 s). One case at a time, a run took 14-26 s on this shared 2-core
machine (too slow for two runs plus the stack in 60 s); four at a time it takes 6-15 s with the
same results, so the cases run four at a time (the whole test: ~30-40 s).

Exceptions, each listed with its reason in tests/conformance/expectations.py and printed:
- BACKEND_FAILURES: what the sample backend fails on its own (websockets answers 7.1.5 with 1002;
  its 1 MiB default max_size refuses the 4-16 MiB messages of 9.x with 1009). The direct run must
  fail exactly these, so a broken backend cannot make the comparison vacuous;
- DELIBERATE: the router's own 1 MiB message limit; through wsgate those cases must end with 1009;
- ECHO_RACES: 3.x/4.x cases where the server's echo of a valid message races its failing the
  connection on the next, invalid frame; Autobahn accepts OK or NON-STRICT and the direct run
  shows both, so those two verdicts count as one there (close code and close verdict still
  compared).

It runs once per relay path (tests/relay_paths.py: the router on the Python relay, then on the
native core), each on its own stack; the direct run is done once, on the first stack's backend,
and is the reference for both.

The Autobahn runner cannot send an Authorization header, so the API is deployed with an unsecured
topic (authType None, tests/conformance/ConformanceEcho-1.0.0); the enforcer still decides.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.conformance import expectations
from tests.conformance.compare import compare
from tests.conformance.runner import CaseRecord, run_cases
from tests.integration.conftest import Stack, handshake

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1] / "conformance" / "ConformanceEcho-1.0.0"
TOPIC = "/conformance/1.0.0/autobahn"


def _deploy_conformance_api(stack: Stack) -> str:
    """Deploy the unsecured conformance topic in front of this stack's echo backend."""
    target = stack.work / "projects" / PROJECT.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PROJECT, target)
    url = f"ws://localhost:{stack.ports.echo}"
    api_file = target / "api.yaml"
    api = yaml.safe_load(api_file.read_text())
    for key in ("production_endpoints", "sandbox_endpoints"):
        api["data"]["endpointConfig"][key]["url"] = url
    api_file.write_text(yaml.safe_dump(api, sort_keys=False))
    doc_file = target / "Definitions" / "asyncapi.yaml"
    doc = yaml.safe_load(doc_file.read_text())
    doc["servers"]["production"]["url"] = url
    doc_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    stack.login()
    stack.mg_ok("deploy", "api", "-f", str(target), "-e", "dev", "-k", "--override")

    gateway = f"ws://127.0.0.1:{stack.ports.router}{TOPIC}"
    deadline = time.monotonic() + 10
    last = None
    while time.monotonic() < deadline:
        last = handshake(gateway, token=None, message="live?")
        if last.status == 101 and last.echoed == "live?":
            return gateway
        time.sleep(0.05)
    raise AssertionError(f"{gateway} did not echo without a token within 10 s: {last}")


def _kosoku_or_skip() -> None:
    """kosoku comes with the dev extra; in CI its absence is a failure, not a skip."""
    if importlib.util.find_spec("kosoku") is not None:
        return
    message = "kosoku is missing: pip install -e '.[dev]' (make test does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def stack(relay_stack: Stack) -> Stack:
    """The stack with its router on each relay path (tests/relay_paths.py)."""
    return relay_stack


#: The direct run, done once: the backend (the same code on every stack) does not depend on
#: the router's relay path, so the second path is compared with the same reference.
_DIRECT: dict[str, tuple[list[CaseRecord], float]] = {}


def test_autobahn_results_are_identical_direct_and_through_wsgate(stack: Stack) -> None:
    _kosoku_or_skip()
    gateway = _deploy_conformance_api(stack)
    direct_url = f"ws://127.0.0.1:{stack.ports.echo}/"

    if "run" not in _DIRECT:
        started = time.monotonic()
        cases = run_cases(
            direct_url, expectations.CASES, expectations.EXCLUDE, expectations.CONCURRENCY
        )
        _DIRECT["run"] = (cases, time.monotonic() - started)
    direct, direct_s = _DIRECT["run"]
    started = time.monotonic()
    through = run_cases(gateway, expectations.CASES, expectations.EXCLUDE, expectations.CONCURRENCY)
    through_s = time.monotonic() - started

    result = compare(
        direct,
        through,
        min_cases=expectations.MIN_CASES,
        backend_failures=expectations.BACKEND_FAILURES,
        deliberate=expectations.DELIBERATE,
        races=expectations.ECHO_RACES,
    )
    raced = sum(
        d.behavior != t.behavior
        for d, t in zip(direct, through, strict=False)
        if d.case_id in expectations.ECHO_RACES
    )
    print(
        f"\nAutobahn (kosoku): {len(direct)} cases direct to {direct_url} in {direct_s:.1f} s, "
        f"{len(through)} through {gateway} in {through_s:.1f} s; "
        f"{result.identical} identical verbatim, {raced} differ only by an ECHO_RACES race, "
        f"{len(result.differences)} unexplained differences\n"
        f"sample backend fails on its own: {sorted(expectations.BACKEND_FAILURES)}\n"
        + result.report()
    )
    assert not result.problems, "\n".join(result.problems) + "\n\n" + result.report()
