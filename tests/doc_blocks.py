"""The shell blocks of README.md and docs/*.md, as the doc test runs them (pure: no I/O).

The convention (README, "Development"):

- A fenced block whose info string starts with ``sh``, ``bash`` or ``shell`` is a *command
  block*: the doc test (tests/integration/test_docs_commands.py) runs it, in order, after
  `wsgate up`. Other fences (no language, ``js``, ``text``, ...) are not run.
- ``<!-- doc-test: skip (reason) -->`` on the line before the opening fence (blank lines may
  separate them) keeps a command block out; the reason is required. Any other ``doc-test``
  comment, or one that no fence follows, is an error, so a typo never skips a block silently.

The test runs a stack on free ports: :func:`rewrite_ports` turns the documented default ports
(``localhost:9443`` ...) into the test's, and nothing else in a command changes.
:func:`script` puts one document's blocks into one bash script (``set -euo pipefail``; the
shell state carries from block to block, as in one terminal) with two wrappers:

- ``curl`` is ``curl --fail-with-body --show-error``: an HTTP error (4xx/5xx) fails the block
  and is named in its output (even under ``-s``); without it a documented call answering 404
  would pass unnoticed.
- ``npx wscat ...`` (interactive in the docs: "type a message") runs non-interactively with the
  documented arguments plus ``--execute <message> --wait 1``, and fails unless the backend's
  echo of that message comes back (the sample backend echoes every message). A failed attempt
  is tried again twice, 0.5 s apart: the docs promise a change reaches the gateway
  within a second of the answer, and a block's next line may run sooner than that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wsgate.stack import Ports

RUN_LANGUAGES = frozenset({"sh", "bash", "shell"})
BLOCK_MARK = "@@doc-test-block@@"
END_MARK = "@@doc-test-end@@"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"<!--\s*doc-test:(?P<body>.*?)-->")
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]*\S[^)]*)\)$")
_HOST_PORT = re.compile(r"(?P<host>\blocalhost|\b127\.0\.0\.1|\[::1\]):(?P<port>\d+)\b")


class MarkerError(ValueError):
    """A ``doc-test`` comment that is not ``skip (reason)`` right before a fence."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and why it is skipped (if so)."""

    path: str
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    skip: str | None = None

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and self.skip is None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _marker(path: str, number: int, line: str) -> str | None:
    """The skip reason of a ``doc-test`` comment on this line; None when there is none."""
    found = _MARKER.search(line)
    if found is None:
        if "doc-test" in line and "<!--" in line:
            raise MarkerError(f"{path}:{number}: unclosed doc-test comment: {line.strip()!r}")
        return None
    skip = _SKIP.match(found["body"].strip())
    if skip is None:
        raise MarkerError(
            f"{path}:{number}: {line.strip()!r} is not '<!-- doc-test: skip (reason) -->'"
        )
    return skip["reason"].strip()


def extract(path: str, markdown: str) -> list[Block]:
    """Every fenced block of a Markdown document, in order, with its skip marker.

    Raises:
        MarkerError: a malformed ``doc-test`` comment, one not followed by a fence, or an
            unclosed fence.
    """
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker awaiting its fence
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        opening = _FENCE.match(line)
        if opening is None:
            reason = _marker(path, number, line)
            if reason is not None:
                if pending is not None:
                    raise MarkerError(f"{path}:{pending[0]}: doc-test marker without a block")
                pending = (number, reason)
            elif line.strip() and pending is not None:
                raise MarkerError(f"{path}:{pending[0]}: doc-test marker not right before a block")
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"] else ""
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            text = lines[index]
            body.append(text[indent:] if text[:indent].strip() == "" else text)
            index += 1
        else:
            raise MarkerError(f"{path}:{number}: the block opened here is never closed")
        index += 1  # past the closing fence
        skip = pending[1] if pending is not None else None
        pending = None
        blocks.append(Block(path, number, language, "\n".join(body) + "\n", skip))
    if pending is not None:
        raise MarkerError(f"{path}:{pending[0]}: doc-test marker without a block")
    return blocks


def rewrite_ports(text: str, ports: Ports) -> str:
    """``localhost:<default port>`` (and ``127.0.0.1``, ``[::1]``) with the test's port instead;
    ports that are not a default of the local stack are left alone."""
    defaults = dict(Ports().items())
    chosen = dict(ports.items())
    by_default = {port: chosen[name] for name, port in defaults.items()}

    def swap(found: re.Match[str]) -> str:
        port = int(found["port"])
        return f"{found['host']}:{by_default.get(port, port)}"

    return _HOST_PORT.sub(swap, text)


PREAMBLE = r"""set -euo pipefail
exec 2>&1
curl() { command curl --fail-with-body --show-error "$@"; }
__doc_test_stdin=$(mktemp -u)
mkfifo "$__doc_test_stdin"
trap 'rm -f "$__doc_test_stdin"' EXIT
__doc_test_sent=0
npx() {
  if [ "${1:-}" != wscat ]; then command npx "$@"; return; fi
  __doc_test_sent=$((__doc_test_sent + 1))
  local message="doc-test-message-$__doc_test_sent" out status attempt
  for attempt in 1 2 3; do
    # stdin never ends (a FIFO opened read-write): wscat quits at the end of its input.
    status=0
    out=$(command npx "$@" --execute "$message" --wait 1 0<>"$__doc_test_stdin") || status=$?
    printf '%s\n' "$out"
    if [ "$status" = 0 ] && grep -qxF -- "$message" <<<"$out"; then return 0; fi
    if [ "$status" != 0 ]; then
      echo "doc-test: wscat exited with status $status (attempt $attempt)"
    else
      echo "doc-test: wscat sent '$message' but no echo came back (attempt $attempt)"
    fi
    sleep 0.5  # a change the block just made may still be on its way to the gateway
  done
  return 1
}
"""


def script(blocks: list[Block], ports: Ports) -> str:
    """One bash script running every runnable block in order, each announced by a line
    ``@@doc-test-block@@ <path>:<line>`` and the whole closed by ``@@doc-test-end@@``."""
    parts = [PREAMBLE]
    for block in blocks:
        if not block.runs:
            continue
        parts.append(f"printf '\\n%s %s\\n' '{BLOCK_MARK}' '{block.where}'\n")
        parts.append(rewrite_ports(block.text, ports))
    parts.append(f"printf '\\n%s\\n' '{END_MARK}'\n")
    return "".join(parts)


@dataclass(frozen=True)
class Outcome:
    """Where a run of :func:`script` stopped: the last block started, and its output."""

    finished: bool
    last_block: str | None
    output: str


def outcome(output: str) -> Outcome:
    """Split a script's output at the block lines: the last block that started, and what it
    printed (a run that reached the end mark finished)."""
    finished = False
    last: str | None = None
    chunk: list[str] = []
    for line in output.splitlines():
        if line.startswith(BLOCK_MARK + " "):
            last = line[len(BLOCK_MARK) + 1 :].strip()
            chunk = []
        elif line == END_MARK:
            finished = True
        else:
            chunk.append(line)
    return Outcome(finished, last, "\n".join(chunk).strip("\n"))
