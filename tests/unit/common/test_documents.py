"""The budgeted YAML/JSON loader every component uses for documents from outside (issue 12)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from functools import partial

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile_docs import big_asyncapi, yaml_bomb
from wsgate_common.documents import (
    Budget,
    DocumentError,
    clip,
    load,
    load_in_worker,
    load_in_worker_sync,
    shutdown_workers,
)


def test_a_yaml_bomb_is_refused_at_once_without_echoing_it() -> None:
    started = time.monotonic()
    with pytest.raises(DocumentError) as info:
        load(yaml_bomb())
    assert time.monotonic() - started < 1.0
    assert "alias" in info.value.message and len(info.value.message) < 200


@pytest.mark.parametrize(
    "text",
    ["a: &x 1\nb: *x\n", "a: &x [1]\n", "base: &b {k: 1}\nother:\n  <<: *b\n"],
    ids=["alias", "anchor", "merge-key"],
)
def test_aliases_and_anchors_are_refused(text: str) -> None:
    with pytest.raises(DocumentError, match="alias"):
        load(text)


def test_node_count_depth_size_and_time_budgets() -> None:
    with pytest.raises(DocumentError, match="more than 100 values") as info:
        load(big_asyncapi(100), Budget(max_nodes=100))
    assert info.value.too_large
    with pytest.raises(DocumentError, match="deeper than 5") as info:
        load("a: " + "[" * 6 + "]" * 6, Budget(max_depth=5))
    assert info.value.too_large
    with pytest.raises(DocumentError, match="larger than 10 bytes"):
        load("a: 12345678901", Budget(max_bytes=10))
    ticks = iter(range(10_000_000))
    with pytest.raises(DocumentError, match="longer than 3 s"):
        load(big_asyncapi(2000), Budget(max_seconds=3), clock=lambda: float(next(ticks)))
    with pytest.raises(DocumentError, match="deeper than 64") as info:
        load("[" * 5000 + "]" * 5000, json_only=True)


def test_plain_documents_load_like_safe_load() -> None:
    assert load("a: 1\nb: [x, 2.5, true, null]\n") == {"a": 1, "b": ["x", 2.5, True, None]}
    assert load(b'\xef\xbb\xbf{"k": [1]}', json_only=True) == {"k": [1]}
    assert load("") is None
    with pytest.raises(DocumentError, match="line 2"):
        load("a: [unclosed\n")
    with pytest.raises(DocumentError, match="UTF-8"):
        load(b"\xff\xfe")
    with pytest.raises(DocumentError, match="more than one"):
        load("a: 1\n---\nb: 2\n")


def test_clip_keeps_a_short_prefix() -> None:
    assert clip("x" * 1000) == repr("x" * 40 + "... (1000 characters)")
    assert clip("short") == "'short'"


#: YAML has no escapes for surrogates nor control characters; keep to printable text.
_text = st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=20)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(_values)
def test_any_json_shape_round_trips(value: object) -> None:
    text = json.dumps(value)
    assert load(text, json_only=True) == value
    as_yaml = json.dumps(value, ensure_ascii=False)
    assert load(as_yaml) == yaml.safe_load(as_yaml)  # YAML 1.1 reads some floats as text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab:-&*[]{}<>!|'\"#\n ,?%@`0.", max_size=120))
def test_random_yaml_text_loads_or_fails_cleanly(text: str) -> None:
    started = time.monotonic()
    try:
        load(text, Budget(max_seconds=1))
    except DocumentError as exc:
        assert len(exc.message) < 300
    assert time.monotonic() - started < 2


# -- parsing in a worker process ------------------------------------------------------------


def _worker_pid(seconds: float) -> int:
    """Runs in a document worker: its pid, after ``seconds`` of sleep."""
    time.sleep(seconds)
    return os.getpid()


def test_a_worker_answers_and_keeps_a_budget_error_as_it_was() -> None:
    async def run() -> tuple[object, DocumentError]:
        parsed = await load_in_worker(load, b"a: [1, 2]\n", budget=Budget())
        with pytest.raises(DocumentError) as info:
            await load_in_worker(
                partial(load, budget=Budget(max_nodes=50)), yaml_bomb(), budget=Budget()
            )
        return parsed, info.value

    parsed, error = asyncio.run(run())
    assert parsed == {"a": [1, 2]}
    expected = _in_process_error(yaml_bomb(), Budget(max_nodes=50))
    assert (error.message, error.too_large) == (expected.message, expected.too_large)


def _in_process_error(content: bytes, budget: Budget) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        load(content, budget=budget)
    return info.value


def test_a_budget_hit_keeps_too_large_across_the_process_boundary() -> None:
    deep = b"[" * 100 + b"]" * 100
    expected = _in_process_error(deep, Budget(max_depth=10))
    assert expected.too_large

    async def run() -> DocumentError:
        with pytest.raises(DocumentError) as info:
            await load_in_worker(partial(load, budget=Budget(max_depth=10)), deep, budget=Budget())
        return info.value

    error = asyncio.run(run())
    assert (error.message, error.too_large) == (expected.message, True)


def test_a_worker_over_its_time_is_killed_and_the_next_call_gets_a_new_one() -> None:
    budget = Budget(max_seconds=0.2)  # waited for: 1.2 s

    async def run() -> tuple[DocumentError, int, int]:
        # the first call starts a worker (slow on a loaded box): not under the short budget
        first = await load_in_worker(_worker_pid, 0, budget=Budget())
        with pytest.raises(DocumentError) as info:
            await load_in_worker(_worker_pid, 30, budget=budget)
        again = await load_in_worker(_worker_pid, 0, budget=Budget())
        return info.value, first, again

    error, first, again = asyncio.run(run())
    assert error.too_large and "longer than 0.2 s" in error.message
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the killed worker is gone (reaped by the executor)
            os.kill(first, 0)
            time.sleep(0.1)
    assert again != first
    shutdown_workers()


def test_the_sync_worker_call_answers_and_stops_at_its_time() -> None:
    budget = Budget(max_seconds=0.2)
    assert load_in_worker_sync(partial(load, budget=budget), b"[1]", budget=Budget()) == [1]
    with pytest.raises(DocumentError) as info:
        load_in_worker_sync(_worker_pid, 30, budget=budget)
    assert info.value.too_large
    assert load_in_worker_sync(_worker_pid, 0, budget=Budget()) > 0  # a new worker
    shutdown_workers()


def test_new_workers_start_outside_the_documents_budget() -> None:
    """The first parse after start (or after a kill) waits for its workers' start-up too: that
    time (0.5 to 2 s on a loaded box) is not taken from the document's budget."""
    from wsgate_common import documents

    shutdown_workers()
    budget = Budget(max_seconds=0.5)
    _, first, wait_fresh = documents._submit(_worker_pid, (0,), budget)
    assert first.result(timeout=60) > 0
    _, second, wait_warm = documents._submit(_worker_pid, (0,), budget)
    assert second.result(timeout=60) > 0
    assert wait_fresh == 0.5 + 1.0 + documents.STARTUP_ALLOWANCE
    assert wait_warm == 0.5 + 1.0
    shutdown_workers()
