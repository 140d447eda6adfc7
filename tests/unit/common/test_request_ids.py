"""X-Request-ID is taken from a client only in a safe shape (issue 12 item 8)."""

from __future__ import annotations

import re

import pytest

from wsgate_common.request_ids import safe_request_id


@pytest.mark.parametrize("value", ["abc", "A.b_c-1", "x" * 64, "0f" * 16])
def test_safe_ids_are_kept(value: str) -> None:
    assert safe_request_id(value) == value


@pytest.mark.parametrize(
    "value", [None, "", "../../evil<script>", "x" * 65, "a b", "..", "é", "id\r\nX-Evil: 1"]
)
def test_anything_else_gets_a_new_id(value: str | None) -> None:
    minted = safe_request_id(value)
    assert minted != value and re.fullmatch(r"[0-9a-f]{32}", minted)


def test_minted_ids_do_not_repeat_across_pool_refills() -> None:
    ids = {safe_request_id(None) for _ in range(1000)}  # 16 KB: several 4 KiB refills
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", minted) for minted in ids)
