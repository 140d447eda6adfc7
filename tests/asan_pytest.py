"""Run pytest with router._core loaded from an AddressSanitizer/UBSan build (make sanitize-core).

usage: python tests/asan_pytest.py <the ASan build of _core.so> <pytest args...>
The interpreter must run with libasan/libubsan preloaded (the Makefile target does it).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest


def main() -> int:
    path, args = sys.argv[1], sys.argv[2:]
    spec = importlib.util.spec_from_file_location("router._core", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["router._core"] = module
    import router

    router._core = module  # type: ignore[attr-defined]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main())
