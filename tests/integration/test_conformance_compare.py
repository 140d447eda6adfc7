"""The conformance comparison itself (no processes): it must catch what it is there to catch."""

from __future__ import annotations

from dataclasses import replace

from tests.conformance.compare import Comparison, compare
from tests.conformance.expectations import Deliberate
from tests.conformance.runner import CaseRecord

HEAD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)


def _record(case_id: str, behavior: str = "OK", code: int | None = 1000) -> CaseRecord:
    return CaseRecord(
        case_id=case_id,
        behavior=behavior,
        behavior_close="OK",
        remote_close_code=code,
        remote_close_reason="",
        local_close_code=1000,
        was_clean=True,
        closed_by_me=True,
        dropped_by_me=False,
        failed_by_me=False,
        result="",
        result_close="",
        description="",
        expected_verdicts=("OK", "NON-STRICT"),
        agent="",
        http_response=HEAD,
        duration_ms=1,
    )


RUN = [
    _record("1.1.1"),
    _record("3.2"),
    _record("7.1.5", "FAILED", 1002),
    _record("9.1.4", "FAILED", 1009),
]


def _compare(
    direct: list[CaseRecord], through: list[CaseRecord], races: tuple[str, ...] = ("3.2",)
) -> Comparison:
    return compare(
        direct,
        through,
        min_cases=4,
        backend_failures={"7.1.5": "the backend's own bug", "9.1.4": "the backend's limit"},
        deliberate={"9.1.4": Deliberate("router limit", 1009)},
        races={case: "race" for case in races},
    )


def _with(case_id: str, **changes: object) -> list[CaseRecord]:
    return [replace(r, **changes) if r.case_id == case_id else r for r in RUN]  # type: ignore[arg-type]


def test_identical_runs_pass() -> None:
    result = _compare(RUN, RUN)
    assert result.problems == []
    assert "9.1.4: through FAILED" in result.report()


def test_a_different_close_code_or_verdict_is_a_difference() -> None:
    for changes in (
        {"remote_close_code": 1011},
        {"behavior": "FAILED"},
        {"behavior_close": "UNCLEAN"},
        {"was_clean": False},
    ):
        result = _compare(RUN, _with("1.1.1", **changes))
        assert [d.case_id for d in result.differences] == ["1.1.1"], changes
        assert "UNEXPLAINED DIFFERENCES" in result.report()


def test_ok_and_non_strict_are_one_verdict_only_for_listed_races() -> None:
    through = _with("3.2", behavior="NON-STRICT")
    assert not [d for d in _compare(RUN, through).differences if d.case_id == "3.2"]
    not_listed = _compare(RUN, through, races=())
    assert [d.case_id for d in not_listed.differences if d.case_id == "3.2"] == ["3.2"]


def test_a_deliberate_case_must_show_the_router_limit() -> None:
    echoed = _with("9.1.4", behavior="OK", remote_close_code=1000)  # the router let it through
    assert [d.case_id for d in _compare(RUN, echoed).differences] == ["9.1.4"]
    # A backend that echoes the big message while the router closes with 1009: not a difference.
    assert (
        _compare(_with("9.1.4", behavior="FAILED", remote_close_code=1000), RUN).differences == []
    )


def test_the_backend_must_fail_exactly_the_known_cases() -> None:
    broken = _with("1.1.1", behavior="FAILED")
    assert any("now fails 1.1.1" in p for p in _compare(broken, broken).problems)
    fixed = _with("7.1.5", behavior="OK", remote_close_code=1000)
    assert any("now passes 7.1.5" in p for p in _compare(fixed, fixed).problems)


def test_missing_cases_and_handshake_headers_are_problems() -> None:
    assert _compare(RUN, RUN[:-1]).problems
    other = _with("1.1.1", http_response=HEAD + "\r\nSec-WebSocket-Extensions: permessage-deflate")
    assert [d.case_id for d in _compare(RUN, other).differences][:1] == ["1.1.1"]
