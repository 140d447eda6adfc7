"""The doc test's pure parts: finding blocks and markers, rewriting ports, the script and
reading its output back (tests/doc_blocks.py)."""

from __future__ import annotations

import http.server
import subprocess
import threading

import pytest

from tests.doc_blocks import (
    BLOCK_MARK,
    END_MARK,
    Block,
    MarkerError,
    extract,
    outcome,
    rewrite_ports,
    script,
)
from tests.procs import REPO
from wsgate.stack import Ports

DOC = """# Title

```sh
echo one
```

Text.

<!-- doc-test: skip (interactive) -->

```bash
read -r line
```

```js
new WebSocket(url);
```

1. In a list:

   ```sh
   echo indented
   ```

````sh
echo "```"
````
"""


def test_blocks_languages_lines_and_skips() -> None:
    blocks = extract("doc.md", DOC)
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (3, "sh", None),
        (11, "bash", "interactive"),
        (15, "js", None),
        (21, "sh", None),
        (25, "sh", None),
    ]
    assert blocks[0].text == "echo one\n"
    assert blocks[3].text == "echo indented\n"  # the list's indentation is taken off
    assert blocks[4].text == 'echo "```"\n'  # a longer fence holds a shorter one
    assert [b.runs for b in blocks] == [True, False, False, True, True]
    assert blocks[1].where == "doc.md:11"


@pytest.mark.parametrize(
    ("text", "mention"),
    [
        ("<!-- doc-test: skip -->\n```sh\nx\n```\n", "doc.md:1"),  # no reason
        ("<!-- doc-test: skip () -->\n```sh\nx\n```\n", "doc.md:1"),  # empty reason
        ("<!-- doc-test: skp (typo) -->\n```sh\nx\n```\n", "skip (reason)"),
        ("<!-- doc-test: skip (x) -->\nSome text.\n```sh\nx\n```\n", "not right before"),
        ("```sh\nx\n```\n<!-- doc-test: skip (x) -->\n", "without a block"),
        ("<!-- doc-test: skip (x)\n```sh\nx\n```\n", "unclosed"),
        ("```sh\nnever closed\n", "never closed"),
    ],
)
def test_bad_markers_and_fences_are_errors(text: str, mention: str) -> None:
    with pytest.raises(MarkerError, match=mention.replace("(", r"\(").replace(")", r"\)")):
        extract("doc.md", text)


def test_the_real_docs_parse_and_have_runnable_blocks() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        blocks = extract(path.name, path.read_text())
        for block in blocks:
            assert block.skip is None or block.skip.strip(), block.where
    readme = extract("README.md", (REPO / "README.md").read_text())
    assert sum(b.runs for b in readme) >= 4


def test_ports_are_rewritten_only_where_they_are_the_stack_defaults() -> None:
    ports = Ports(cp=1443, adapter_rest=1843, router=1090, router_tls=1095, echo=1765)
    text = (
        "curl https://localhost:9443/x; wsgate mg add env dev --adapter https://localhost:9843\n"
        "wscat -c ws://localhost:9090/a wss://127.0.0.1:9095/b ws://[::1]:8765\n"
        "http://localhost:8000 example.com:9443 localhost:94430 -d 9443\n"
    )
    assert rewrite_ports(text, ports) == (
        "curl https://localhost:1443/x; wsgate mg add env dev --adapter https://localhost:1843\n"
        "wscat -c ws://localhost:1090/a wss://127.0.0.1:1095/b ws://[::1]:1765\n"
        "http://localhost:8000 example.com:9443 localhost:94430 -d 9443\n"
    )


def _run(blocks: list[Block]) -> tuple[int, str]:
    done = subprocess.run(
        ["bash", "-c", script(blocks, Ports())], capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stdout


def test_the_script_runs_blocks_in_order_with_shared_state_and_stops_at_a_failure() -> None:
    blocks = extract(
        "d.md",
        "```sh\nA=1\necho first $A\n```\n<!-- doc-test: skip (no) -->\n```sh\necho skipped\n```\n"
        "```sh\necho second $A\n```\n",
    )
    status, out = _run(blocks)
    assert status == 0
    assert f"{BLOCK_MARK} d.md:1" in out and "first 1" in out and "second 1" in out
    assert "skipped" not in out
    assert outcome(out).finished

    failing = extract("d.md", "```sh\necho ok\n```\n```sh\necho before\nfalse\necho after\n```\n")
    status, out = _run(failing)
    result = outcome(out)
    assert status != 0 and not result.finished
    assert result.last_block == "d.md:4"
    assert result.output == "before"


def test_unset_variables_and_failed_pipes_fail_the_block() -> None:
    for text in ("echo $NOT_SET_ANYWHERE\n", "false | cat\n", "X=$(false | cat)\n"):
        status, out = _run(extract("d.md", f"```sh\n{text}```\n"))
        assert status != 0 and not outcome(out).finished, text


def test_curl_fails_on_an_http_error() -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"code":404,"message":"Not Found"}'
            self.send_response(404 if self.path == "/missing" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        ok = extract("d.md", f"```sh\ncurl -s {url}/present\n```\n")
        assert _run(ok)[0] == 0
        missing = extract("d.md", f"```sh\nBODY=$(curl -s {url}/missing)\n```\n")
        status, out = _run(missing)
        server.shutdown()
    assert status == 22 and outcome(out).last_block == "d.md:1"


def test_outcome_of_an_empty_run() -> None:
    assert outcome("") == outcome("\n")
    assert not outcome("").finished and outcome("").last_block is None
    assert outcome(f"{BLOCK_MARK} a.md:3\nhello\n{END_MARK}\n").finished
