"""Analytics: the pure pieces (deltas, events, the bounded pipeline, sinks), then the events and
the /metrics page a real in-process router produces for real connections."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from router.analytics import (
    ZERO,
    ConnectionEvent,
    Counts,
    Event,
    HandshakeEvent,
    JsonLinesFile,
    JsonLinesLog,
    Pipeline,
    Tags,
    delta,
)
from router.metrics import RouterMetrics
from tests.unit.router.test_server import (
    active,
    event_loop_policy,
    open_env,
    raw_request,
    upgrade,
    wait_until,
)
from wsgate_common.metrics import parse_samples
from wsgate_proto import enforcer_pb2

__all__ = ["event_loop_policy"]

pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy"')

TAGS = Tags("r1", "Echo:1.0.0", "echo", "/", "app-1", "PRODUCTION", "127.0.0.1")


class ListSink:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.closed = False

    def write(self, batch: Sequence[Event]) -> None:
        self.batches.append(list(batch))

    def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]


class BrokenSink(ListSink):
    def write(self, batch: Sequence[Event]) -> None:
        raise RuntimeError("disk full")


def handshake(n: int) -> HandshakeEvent:
    return HandshakeEvent(TAGS, True, 101, "", float(n), 0.0)


# -- pure pieces ---------------------------------------------------------------------------


def test_delta_subtracts_field_by_field() -> None:
    before = Counts(1, 2, 1, 1, 100, 200, 0)
    now = Counts(4, 2, 3, 1, 150, 200, 2)
    assert delta(before, now) == Counts(3, 0, 2, 0, 50, 0, 2)
    assert delta(ZERO, now) == now


def test_events_serialize_to_flat_json() -> None:
    shake = HandshakeEvent(TAGS, False, 403, "scope validation failed", 12.34567, 1700000000.5)
    assert shake.to_dict() == {
        "event": "handshake",
        "ts": 1700000000.5,
        "request_id": "r1",
        "api": "Echo:1.0.0",
        "api_id": "echo",
        "topic": "/",
        "application_id": "app-1",
        "key_type": "PRODUCTION",
        "client_ip": "127.0.0.1",
        "allowed": False,
        "status": 403,
        "reason": "scope validation failed",
        "latency_ms": 12.346,
    }
    live = ConnectionEvent(TAGS, Counts(1, 2, 1, 2, 10, 20, 0), 1.5, 0.0)
    assert live.to_dict()["event"] == "connection" and "close_code" not in live.to_dict()
    final = ConnectionEvent(
        TAGS, ZERO, 3.0, 0.0, final=True, close_code=1001, closed_by="router", cause="idle"
    )
    out = final.to_dict()
    assert (out["event"], out["close_code"], out["closed_by"]) == (
        "connection_closed",
        1001,
        "router",
    )
    assert out["frames_up"] == 0 and out["duration_s"] == 3.0


def test_event_fields_come_in_one_order() -> None:
    """The JSON lines keep their field order: the event, the tags, the counters, the rest."""
    tags = list(TAGS.as_dict())
    shake = HandshakeEvent(TAGS, True, 101, "", 1.0, 0.0).to_dict()
    assert list(shake) == ["event", "ts", *tags, "allowed", "status", "reason", "latency_ms"]
    counts = list(Counts._fields)
    live = ConnectionEvent(TAGS, ZERO, 1.0, 0.0).to_dict()
    assert list(live) == ["event", "ts", *tags, *counts, "duration_s"]
    final = ConnectionEvent(TAGS, ZERO, 1.0, 0.0, final=True).to_dict()
    ends = ["close_code", "closed_by", "close_reason", "cause"]
    assert list(final) == ["event", "ts", *tags, *counts, "duration_s", *ends]


def test_pipeline_ships_batches_and_drops_oldest_when_full() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], capacity=3)
    for n in range(5):
        pipeline.emit(handshake(n))
    assert pipeline.dropped == 2
    assert pipeline.flush() == 3
    assert [e.latency_ms for e in sink.events if isinstance(e, HandshakeEvent)] == [2.0, 3.0, 4.0]
    assert pipeline.flush() == 0 and len(sink.batches) == 1  # nothing new: no empty batch


def test_pipeline_collects_at_flush_and_survives_broken_sinks() -> None:
    good = ListSink()
    calls: list[float] = []

    def collect(now: float) -> list[Event]:
        calls.append(now)
        return [handshake(9)]

    pipeline = Pipeline([BrokenSink(), good], collect)
    pipeline.emit(handshake(1))
    assert pipeline.flush() == 2
    assert len(calls) == 1 and len(good.events) == 2  # the broken sink did not stop the good one


async def test_pipeline_flushes_periodically_and_on_stop() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], interval=0.05)
    pipeline.start()
    pipeline.emit(handshake(1))
    await wait_until(lambda: len(sink.events) == 1)
    pipeline.emit(handshake(2))
    await pipeline.stop()
    assert len(sink.events) == 2 and sink.closed


def test_pipeline_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Pipeline([], capacity=0)
    with pytest.raises(ValueError):
        Pipeline([], interval=0)


def test_json_lines_file_and_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sub" / "analytics.jsonl"
    sink = JsonLinesFile(path)
    sink.write([handshake(1), handshake(2)])
    sink.write([])
    sink.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["latency_ms"] for line in lines] == [1.0, 2.0]
    with caplog.at_level(logging.INFO, logger="wsgate.analytics"):
        JsonLinesLog().write([handshake(3)])
    records = [r for r in caplog.records if r.name == "wsgate.analytics"]
    assert len(records) == 1 and json.loads(records[0].getMessage())["status"] == 101


def test_metrics_count_what_the_router_reports() -> None:
    metrics = RouterMetrics(
        active=lambda: 7,
        xds_version=lambda: "v9",
        dropped=lambda: 3,
        traffic=lambda: Counts(3, 3, 2, 2, 110, 300, 1),
    )
    metrics.handshake(True, 101, 0.005)
    metrics.handshake(False, 401, 0.002)
    metrics.connection_closed(1008, "router", "rule", "API blocked")
    got = parse_samples(metrics.render().decode())
    assert got['wsgate_router_handshakes_total{result="allowed",status="101"}'] == 1
    assert got['wsgate_router_handshakes_total{result="denied",status="401"}'] == 1
    assert got["wsgate_router_handshake_seconds_count"] == 2
    assert got['wsgate_router_frames_total{direction="up"}'] == 3
    assert got['wsgate_router_frames_total{direction="down"}'] == 3
    assert got['wsgate_router_bytes_total{direction="down"}'] == 300
    assert got['wsgate_router_messages_total{direction="up"}'] == 2
    assert got["wsgate_router_messages_throttled_total"] == 1
    assert got['wsgate_router_connection_closes_total{by="router",code="1008"}'] == 1
    assert got['wsgate_router_rule_closes_total{reason="API blocked"}'] == 1
    assert got["wsgate_router_connections_active"] == 7
    assert got['wsgate_router_xds_version_info{version="v9"}'] == 1
    assert got["wsgate_router_analytics_dropped_total"] == 3


# -- a real router -------------------------------------------------------------------------


async def test_router_reports_handshakes_deltas_and_close(tmp_path: Path, relay_path: str) -> None:
    sink = ListSink()
    async with open_env(tmp_path, relay=relay_path, sinks=[sink], analytics_interval=0.1) as env:
        async with connect(env.url(), compression=None) as ws:
            for _ in range(3):
                await ws.send("abc")
                await ws.recv()

            def live_events() -> list[ConnectionEvent]:
                return [e for e in sink.events if isinstance(e, ConnectionEvent) and not e.final]

            await wait_until(lambda: sum(e.counts.messages_up for e in live_events()) == 3)
            first = len(live_events())
            await asyncio.sleep(0.3)  # quiet: no event for a connection that did not move
            assert len(live_events()) == first
            for _ in range(2):
                await ws.send("abc")
                await ws.recv()
            await wait_until(lambda: sum(e.counts.messages_up for e in live_events()) == 5)
            # deltas, not totals: the two new messages (one flush may fall between them)
            later = [e.counts.messages_up for e in live_events()[first:]]
            assert sum(later) == 2 and all(0 < n <= 2 for n in later), later
        await raw_request(env.port, upgrade("/echo/1.0.0", "Authorization: Bearer deny"))
        await wait_until(
            lambda: any(isinstance(e, ConnectionEvent) and e.final for e in sink.events)
        )

    shakes = [e for e in sink.events if isinstance(e, HandshakeEvent)]
    assert [(e.allowed, e.status) for e in shakes] == [(True, 101), (False, 403)]
    ok = shakes[0]
    assert (ok.tags.api, ok.tags.api_id, ok.tags.topic) == ("Echo:1.0.0", "echo", "/")
    assert ok.tags.key_type == "PRODUCTION" and ok.tags.client_ip == "127.0.0.1"
    assert ok.tags.request_id and ok.latency_ms > 0
    assert "Scope validation failed" in shakes[1].reason
    conn = [e for e in sink.events if isinstance(e, ConnectionEvent)]
    final = conn[-1]
    assert final.final and final.close_code == 1000 and final.closed_by == "client"
    assert final.tags.request_id == ok.tags.request_id
    total = Counts(*(sum(col) for col in zip(*(e.counts for e in conn), strict=True)))
    assert (total.messages_up, total.messages_down) == (5, 5)
    assert total.frames_up == 6 and total.frames_down == 6  # 5 messages + the close each way
    assert total.bytes_up == 5 * (6 + 3) + 6 + 2  # masked 3-byte texts + masked close 1000


async def test_metrics_page_on_the_router_ports(tmp_path: Path, relay_path: str) -> None:
    async with open_env(tmp_path, relay=relay_path) as env:
        async with connect(env.url(), compression=None) as ws:
            await ws.send("hello")
            await ws.recv()
            async with httpx.AsyncClient() as client:
                page = await client.get(f"http://127.0.0.1:{env.port}/metrics")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
            got = parse_samples(page.text)
            assert got["wsgate_router_connections_active"] == 1
            # /metrics flushes first: the live connection's counters are already in.
            assert got['wsgate_router_messages_total{direction="up"}'] == 1
        await raw_request(env.port, upgrade("/echo/1.0.0", "Authorization: Bearer deny"))
        await wait_until(lambda: active(env.router) == 0)
        status, _, body = await raw_request(env.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        got = parse_samples(body.decode())
        assert got['wsgate_router_handshakes_total{result="allowed",status="101"}'] == 1
        assert got['wsgate_router_handshakes_total{result="denied",status="403"}'] == 1
        assert got['wsgate_router_connection_closes_total{by="client",code="1000"}'] == 1
        assert got['wsgate_router_frames_total{direction="down"}'] == 2
        assert got["wsgate_router_connections_active"] == 0
        assert got['wsgate_router_xds_version_info{version="v1"}'] == 1
        assert got["wsgate_router_handshake_seconds_count"] == 2


async def test_rule_close_is_reported_with_its_cause(tmp_path: Path, relay_path: str) -> None:
    sink = ListSink()
    async with open_env(tmp_path, relay=relay_path, sinks=[sink]) as env:
        async with connect(env.url()) as ws:
            await ws.send("x")
            await ws.recv()
            rule = enforcer_pb2.ConnectionRule(api_id="echo", close_code=1008, reason="API blocked")
            assert env.router.apply_rule(rule) == 1
            await wait_until(lambda: active(env.router) == 0)
        got = parse_samples(env.router.metrics_text().decode())
    final = [e for e in sink.events if isinstance(e, ConnectionEvent) and e.final]
    assert len(final) == 1
    assert (final[0].cause, final[0].close_code, final[0].closed_by) == ("rule", 1008, "router")
    assert final[0].close_reason == "API blocked"
    assert got['wsgate_router_rule_closes_total{reason="API blocked"}'] == 1
    assert got['wsgate_router_connection_closes_total{by="router",code="1008"}'] == 1


async def test_metrics_are_exact_when_the_analytics_queue_drops(
    tmp_path: Path, relay_path: str
) -> None:
    """A queue of one event, flushed every minute: analytics drops nearly everything, and
    /metrics still counts every handshake, message, frame, byte and close."""
    sink = ListSink()
    async with open_env(
        tmp_path, relay=relay_path, sinks=[sink], analytics_queue=1, analytics_interval=60
    ) as env:
        sent = 0
        for i in range(6):
            async with connect(env.url(), compression=None) as ws:
                for _ in range(i + 1):
                    await ws.send("abc")
                    assert await ws.recv() == "abc"
                    sent += 1
        async with connect(env.url(), compression=None) as live:  # one still open
            await live.send("abcd")
            await live.recv()
            sent += 1
            await wait_until(lambda: active(env.router) == 1)
            got = parse_samples(env.router.metrics_text().decode())
        await wait_until(lambda: active(env.router) == 0)
        after = parse_samples(env.router.metrics_text().decode())
    assert env.router.analytics.dropped > 0  # the analytics did lose events
    assert got['wsgate_router_messages_total{direction="up"}'] == sent
    assert got['wsgate_router_messages_total{direction="down"}'] == sent
    assert got['wsgate_router_handshakes_total{result="allowed",status="101"}'] == 7
    assert got["wsgate_router_handshake_seconds_count"] == 7
    assert got['wsgate_router_connection_closes_total{by="client",code="1000"}'] == 6
    # 6 closed connections: their messages and a close frame each way; the open one: 1 message.
    assert got['wsgate_router_frames_total{direction="up"}'] == sent + 6
    assert got['wsgate_router_bytes_total{direction="down"}'] == (sent - 1) * 5 + 6 + 6 * 4
    assert after['wsgate_router_messages_total{direction="up"}'] == sent
    assert after['wsgate_router_frames_total{direction="up"}'] == sent + 7
    assert after['wsgate_router_connection_closes_total{by="client",code="1000"}'] == 7
