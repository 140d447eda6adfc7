"""Pair a direct run and a through-wsgate run of the same Autobahn cases and say what differs.

Per case the comparison looks at what the client observes: the message-exchange verdict
(``behavior``), the closing-handshake verdict (``behavior_close``), the close code the server
sent, and whether the close was clean; plus the WebSocket headers of the 101 answer (status,
Upgrade, Connection, Sec-WebSocket-Accept/-Extensions/-Protocol). The exceptions come from
:mod:`tests.conformance.expectations` and are checked by their own rule, never dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.conformance.expectations import RACE_VERDICTS, Deliberate
from tests.conformance.runner import CaseRecord

RACE = "OK|NON-STRICT"
ECHO_RACE_NOTE = (
    "OK and NON-STRICT count as one verdict here: whether the echo of the valid first message "
    "beats the failure on the bad frame is a race in the server (expectations.ECHO_RACES)"
)
ROUTER_CLOSE_NOTE = (
    "where the close reason through wsgate is not the backend's, the router's frame scanner "
    "failed the connection before the backend could (router/frames.py -> relay.stream_error):"
)
HANDSHAKE_HEADERS = (
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
)


@dataclass(frozen=True)
class Outcome:
    """What must be identical for a case, direct and through wsgate."""

    behavior: str
    behavior_close: str
    remote_close_code: int | None
    was_clean: bool

    def __str__(self) -> str:
        clean = "clean" if self.was_clean else "unclean"
        code = self.remote_close_code if self.remote_close_code is not None else "no close"
        return f"{self.behavior} / close {self.behavior_close} / {code} / {clean}"


def outcome(record: CaseRecord, race: bool = False) -> Outcome:
    behavior = record.behavior
    if race and behavior in RACE_VERDICTS:
        behavior = RACE
    return Outcome(behavior, record.behavior_close, record.remote_close_code, record.was_clean)


def handshake(http_response: str) -> tuple[str, dict[str, str]]:
    """The status line and the WebSocket headers of a 101 answer (names lower-cased)."""
    lines = http_response.replace("\r\n", "\n").split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in HANDSHAKE_HEADERS:
            headers[name.strip().lower()] = value.strip()
    return lines[0].strip(), headers


def other_headers(http_response: str) -> set[str]:
    """Names of the 101 answer's headers that are not WebSocket headers (Server, Date, ...)."""
    names = set()
    for line in http_response.replace("\r\n", "\n").split("\n")[1:]:
        name = line.partition(":")[0].strip()
        if name and name.lower() not in HANDSHAKE_HEADERS:
            names.add(name)
    return names


@dataclass
class Difference:
    case_id: str
    direct: CaseRecord
    through: CaseRecord
    what: str

    def describe(self) -> str:
        d, t = self.direct, self.through
        return (
            f"{self.case_id}: {self.what}\n"
            f"    case:    {d.description[:160]}\n"
            f"    direct:  {outcome(d)}  closed_by_me={d.closed_by_me} "
            f"dropped_by_me={d.dropped_by_me} failed_by_me={d.failed_by_me}\n"
            f"             {d.result} | {d.result_close}\n"
            f"    through: {outcome(t)}  closed_by_me={t.closed_by_me} "
            f"dropped_by_me={t.dropped_by_me} failed_by_me={t.failed_by_me}\n"
            f"             {t.result} | {t.result_close}"
        )


@dataclass
class Comparison:
    direct: list[CaseRecord]
    through: list[CaseRecord]
    problems: list[str] = field(default_factory=list)  # anything here fails the test
    differences: list[Difference] = field(default_factory=list)  # unexplained, also problems
    deliberate: dict[str, list[str]] = field(default_factory=dict)  # reason -> case outcomes
    races: list[str] = field(default_factory=list)  # race cases, raw verdicts both ways
    router_closes: list[str] = field(default_factory=list)  # close reason not the backend's
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> int:
        """Cases whose outcome is identical verbatim (race cases included as they are)."""
        pairs = zip(self.direct, self.through, strict=False)
        return sum(outcome(d) == outcome(t) for d, t in pairs)

    def table(self) -> str:
        """Per category: cases, verdicts both ways, how many are identical."""
        by_cat: dict[str, list[tuple[CaseRecord, CaseRecord]]] = {}
        for d, t in zip(self.direct, self.through, strict=False):
            by_cat.setdefault(d.category, []).append((d, t))
        header = f"{'cat':>3} {'cases':>5}  {'direct':<62} {'through wsgate':<62} {'same':>4}"
        rows = [header, "-" * len(header)]
        for cat, pairs in sorted(by_cat.items(), key=lambda kv: int(kv[0])):
            rows.append(
                f"{cat:>3} {len(pairs):>5}  {_verdicts(d for d, _ in pairs):<62} "
                f"{_verdicts(t for _, t in pairs):<62} "
                f"{sum(outcome(d) == outcome(t) for d, t in pairs):>4}"
            )
        rows.append(f"all {len(self.direct):>5}  {'':<62} {'':<62} {self.identical:>4}")
        return "\n".join(rows)

    def report(self) -> str:
        parts = [self.table()]
        deliberate = [
            f"{reason}:\n    " + "\n    ".join(cases) for reason, cases in self.deliberate.items()
        ]
        races = []
        if self.races:
            races = [ECHO_RACE_NOTE, *self.races]
        router_closes = []
        if self.router_closes:
            router_closes = [ROUTER_CLOSE_NOTE, ", ".join(self.router_closes)]
        for title, lines in (
            ("deliberate differences, checked by their own rule", deliberate),
            ("timing races inside the server", races),
            ("close frames the router wrote itself (same code, its own reason)", router_closes),
            ("notes", self.notes),
            ("UNEXPLAINED DIFFERENCES", [d.describe() for d in self.differences]),
            ("PROBLEMS", self.problems),
        ):
            if lines:
                parts.append(f"\n{title}:\n  " + "\n  ".join(lines))
        return "\n".join(parts)


def _verdicts(records: Iterable[CaseRecord]) -> str:
    counts = Counter(f"{r.behavior}/{r.behavior_close}" for r in records)
    return ", ".join(f"{k} {n}" for k, n in counts.most_common())


def compare(
    direct: list[CaseRecord],
    through: list[CaseRecord],
    *,
    min_cases: int,
    backend_failures: Mapping[str, str],
    deliberate: Mapping[str, Deliberate],
    races: Mapping[str, str],
) -> Comparison:
    result = Comparison(direct, through)
    problems = result.problems
    direct_ids = [r.case_id for r in direct]
    through_ids = [r.case_id for r in through]
    if direct_ids != through_ids:
        missing = sorted(set(direct_ids) ^ set(through_ids))
        problems.append(f"the runs did not cover the same cases: {missing[:20]}")
    if len(direct_ids) < min_cases:
        problems.append(f"only {len(direct_ids)} cases ran directly (expected >= {min_cases})")

    # The direct run is the reference: it must have run every case, and fail only the known ones.
    errors = [r.case_id for r in direct if r.behavior == "ERROR"]
    if errors:
        problems.append(f"direct run could not run cases {errors}: is the backend up?")
    failed = {r.case_id for r in direct if "FAILED" in (r.behavior, r.behavior_close)}
    for case_id in sorted(failed - set(backend_failures), key=_key):
        problems.append(f"the backend itself now fails {case_id} (not in BACKEND_FAILURES)")
    for case_id in sorted(set(backend_failures) - failed, key=_key):
        problems.append(f"the backend now passes {case_id}: remove it from BACKEND_FAILURES")

    for case_id, reason in races.items():
        found = next((r for r in direct if r.case_id == case_id), None)
        if found is not None and not RACE_VERDICTS <= set(found.expected_verdicts):
            problems.append(
                f"{case_id} is listed in ECHO_RACES but Autobahn does not accept both OK and "
                f"NON-STRICT for it ({found.expected_verdicts}): {reason}"
            )

    extra_headers: set[str] = set()
    missing_headers: set[str] = set()
    for d, t in zip(direct, through, strict=False):
        if d.case_id != t.case_id:
            continue
        if handshake(d.http_response) != handshake(t.http_response):
            result.differences.append(
                Difference(
                    d.case_id,
                    d,
                    t,
                    f"101 answers differ: direct {handshake(d.http_response)}, "
                    f"through {handshake(t.http_response)}",
                )
            )
        extra_headers |= other_headers(t.http_response) - other_headers(d.http_response)
        missing_headers |= other_headers(d.http_response) - other_headers(t.http_response)
        if d.remote_close_reason != t.remote_close_reason and t.remote_close_code is not None:
            result.router_closes.append(d.case_id)
        if d.case_id in deliberate:
            rule = deliberate[d.case_id]
            same = "identical to direct" if outcome(d) == outcome(t) else f"direct: {outcome(d)}"
            line = f"{d.case_id}: through {outcome(t)} ({same})"
            result.deliberate.setdefault(rule.reason, []).append(line)
            if t.remote_close_code != rule.close_code:
                result.differences.append(
                    Difference(d.case_id, d, t, f"wsgate should have closed with {rule.close_code}")
                )
            continue
        race = d.case_id in races
        if outcome(d, race) != outcome(t, race):
            result.differences.append(Difference(d.case_id, d, t, "results differ"))
        elif race:
            result.races.append(f"{d.case_id}: direct {d.behavior}, through {t.behavior}")
    if missing_headers or extra_headers:
        result.notes.append(
            "101 answer headers outside the WebSocket ones (not compared): through wsgate "
            f"lacks {sorted(missing_headers)}, adds {sorted(extra_headers)} (the router writes "
            "its own 101, router/http11.py switching_protocols)"
        )
    for difference in result.differences:
        problems.append(f"{difference.case_id}: {difference.what}")
    return result


def _key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))
