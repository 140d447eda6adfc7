"""Run Autobahn fuzzing-client cases with kosoku against one URL, in a child process.

``python -m tests.conformance.runner URL OUT.json --case 1.* --exclude 9.* --concurrency 4``
runs the cases (``concurrency`` at a time) and writes one JSON record per case to ``OUT.json``.

Why a child process: kosoku's native (Rust) runtime sometimes aborts with SIGABRT while the
interpreter shuts down, after every result has been returned. Inside pytest that would turn a
passing session into exit status 134; here the results are written and flushed first and the
child leaves with ``os._exit``, so the abort cannot happen and could not hurt anyway.

kosoku cannot add request headers (``run_fuzzingclient(url, cases, exclude_cases,
concurrency)`` is the whole API), so the gateway run goes to a topic whose security is off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CaseRecord:
    """What kosoku says about one case (the fields the comparison and the report use)."""

    case_id: str
    behavior: str  # OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED, ERROR
    behavior_close: str  # OK, INFORMATIONAL, FAILED, FAILED BY CLIENT, UNCLEAN, WRONG CODE
    remote_close_code: int | None  # the close code the server sent (None: no close frame)
    remote_close_reason: str | None
    local_close_code: int | None
    was_clean: bool
    closed_by_me: bool
    dropped_by_me: bool
    failed_by_me: bool
    result: str
    result_close: str
    description: str
    expected_verdicts: tuple[str, ...]  # verdicts the case's Autobahn expectation can yield
    agent: str  # the Server header of the handshake answer (kosoku falls back to host:port)
    http_response: str  # the head of the handshake answer, verbatim
    duration_ms: int

    @property
    def category(self) -> str:
        return self.case_id.split(".")[0]

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.case_id.split("."))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CaseRecord:
        raw = dict(raw)
        raw["expected_verdicts"] = tuple(raw["expected_verdicts"])
        return cls(**raw)


def _record(result: Any) -> CaseRecord:
    expected = result.expected
    verdicts = tuple(expected.keys()) if isinstance(expected, dict) else ()
    return CaseRecord(
        case_id=result.case_id,
        behavior=result.behavior.value,
        behavior_close=result.behavior_close.value,
        remote_close_code=result.remote_close_code,
        remote_close_reason=result.remote_close_reason,
        local_close_code=result.local_close_code,
        was_clean=bool(result.was_clean),
        closed_by_me=bool(result.closed_by_me),
        dropped_by_me=bool(result.dropped_by_me),
        failed_by_me=bool(result.failed_by_me),
        result=result.result,
        result_close=result.result_close,
        description=result.description,
        expected_verdicts=verdicts,
        agent=result.agent,
        http_response=result.http_response,
        duration_ms=int(result.duration),
    )


async def _run(
    url: str, cases: list[str], exclude: list[str], concurrency: int
) -> list[CaseRecord]:
    from kosoku import FailureError, run_fuzzingclient

    try:
        results = await run_fuzzingclient(url, cases, exclude or None, concurrency=concurrency)
    except FailureError as failure:  # some case did not pass: the results are still all there
        results = failure.results
    return [_record(r) for r in results]


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.runner")
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--case", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    records = asyncio.run(_run(args.url, args.case or ["*"], args.exclude, args.concurrency))
    args.out.write_text(json.dumps([asdict(r) for r in records], indent=1))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown, where kosoku's runtime may abort


def run_cases(
    url: str,
    cases: Sequence[str],
    exclude: Sequence[str] = (),
    concurrency: int = 1,
    timeout: float = 120,
) -> list[CaseRecord]:
    """Run ``cases`` (ids or globs) minus ``exclude`` against ``url``; records in case order."""
    with tempfile.TemporaryDirectory(prefix="kosoku-") as tmp:
        out = Path(tmp) / "results.json"
        command = [sys.executable, "-m", "tests.conformance.runner", url, str(out)]
        command += [f"--case={case}" for case in cases]
        command += [f"--exclude={case}" for case in exclude]
        command.append(f"--concurrency={concurrency}")
        done = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"kosoku run against {url} failed (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
            )
        raw = json.loads(out.read_text())
    return sorted((CaseRecord.from_json(item) for item in raw), key=lambda r: r.sort_key)


if __name__ == "__main__":
    main(sys.argv[1:])
