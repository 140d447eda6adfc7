"""router/native.py numbers the core's event reports by hand: they must follow core.c's
``enum ev`` name for name and in order (a report read as another kind would be a silent bug)."""

from __future__ import annotations

import re
from pathlib import Path

from router import native

CORE_C = Path(__file__).resolve().parents[3] / "router" / "_core" / "core.c"


def test_event_kinds_match_the_cores_enum() -> None:
    found = re.search(r"enum ev \{([^}]*)\}", CORE_C.read_text())
    assert found is not None, "enum ev not found in core.c"
    names = [name.strip() for name in found.group(1).split(",") if name.strip()]
    assert len(names) >= 9
    for value, name in enumerate(names):
        assert getattr(native, name) == value, name
