"""A fixed micro-workload for the frame scanners, to count instructions (not wall-clock time).

The machine these run on is shared, so timings are noise; instruction counts are not. Each
workload feeds N client frames (masked) through a scanner the way the relay does:

- ``single``: one whole frame per chunk (the relay's common case, the fast path);
- ``batch``: 16 frames per chunk (a busy connection: several frames per read);
- ``split``: the stream cut into 1,460-byte chunks (frames across reads).

for payloads of 64 B and 4 KiB, with the plain scanner and with the gated one (every message
admitted). Run one workload under callgrind and subtract the ``--frames 0`` run of the same
workload with kind ``none`` (interpreter start, imports, building the input)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/scanner_cost.py plain single 64 --frames 20000
    (and the same with ``none`` instead of ``plain``)

``bench/scanner_cost.py --all`` does that for every workload and prints instructions per frame.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from router.frames import FrameScanner, GatedScanner, encode_frame  # noqa: E402

KINDS = ("plain", "gated")
BASELINE = "none"  # builds the same input, scans nothing
SHAPES = ("single", "batch", "split")
SIZES = (64, 4096)
BATCH = 16
MSS = 1460


def chunks(shape: str, size: int, frames: int) -> list[bytes]:
    frame = encode_frame(2, b"x" * size, mask=True)
    if shape == "single":
        return [frame] * frames
    if shape == "batch":
        full, rest = divmod(frames, BATCH)
        return [frame * BATCH] * full + ([frame * rest] if rest else [])
    stream = frame * frames
    return [stream[i : i + MSS] for i in range(0, len(stream), MSS)]


def run(kind: str, shape: str, size: int, frames: int) -> int:
    data = chunks(shape, size, frames)
    if kind == BASELINE:
        return len(data)
    if kind == "plain":
        scanner = FrameScanner(True, 1 << 20, False)
        feed = scanner.feed
        for chunk in data:
            feed(chunk)
    else:
        scanner = GatedScanner(True, 1 << 20, False, lambda opcode: True)
        feed = scanner.feed
        for chunk in data:
            feed(chunk)
    assert scanner.frames == frames, (scanner.frames, frames)
    return scanner.frames


def instructions(kind: str, shape: str, size: int, frames: int) -> int:
    """Instructions callgrind counts for one run of this script with these arguments."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        kind,
        shape,
        str(size),
        "--frames",
        str(frames),
    ]
    # A fixed hash seed makes the count repeatable to a few instructions per run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(result.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=(*KINDS, BASELINE))
    parser.add_argument("shape", nargs="?", choices=SHAPES)
    parser.add_argument("size", nargs="?", type=int)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--all", action="store_true", help="every workload under callgrind")
    args = parser.parse_args()
    if not args.all:
        run(args.kind, args.shape, args.size, args.frames)
        return
    print(f"instructions per frame ({args.frames} frames, callgrind; start-up and input taken off)")
    for size in SIZES:
        for shape in SHAPES:
            row = []
            base = instructions(BASELINE, shape, size, args.frames)
            for kind in KINDS:
                total = instructions(kind, shape, size, args.frames)
                row.append(f"{kind} {(total - base) / args.frames:8.1f}")
            print(f"{size:5d} B {shape:6s}  " + "  ".join(row), flush=True)


if __name__ == "__main__":
    main()
