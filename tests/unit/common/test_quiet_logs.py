"""Issue 13 item 7: gRPC failures described on one line, messages folded onto one line, and
C-core logging off unless the environment asks for it."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time

import grpc
import grpc.aio

from tests.procs import free_port
from wsgate_common import grpc_tls
from wsgate_common.logs import BatchingStreamHandler, setup_logging
from wsgate_proto import deploy_pb2, deploy_pb2_grpc


async def test_an_aio_failure_is_described_by_its_status_on_one_line() -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        stub = deploy_pb2_grpc.DeploymentServiceStub(channel)
        try:
            await stub.Status(deploy_pb2.StatusRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            error = exc
    assert grpc_tls.status_code(error) is grpc.StatusCode.UNAVAILABLE
    text = grpc_tls.describe_error(error, "mtls")
    assert text.startswith("UNAVAILABLE: ")
    assert "\n" not in text
    assert "AioRpcError" not in text and "debug_error_string" not in text
    # Nobody listening is not a TLS mismatch: no hint about WSGATE_GRPC_TLS.
    assert "WSGATE_GRPC_TLS" not in text
    assert grpc_tls.status_code(ValueError("x")) is None


def test_refused_connections_get_no_tls_hint() -> None:
    refused = "failed to connect to all addresses; last error: Connection refused"
    assert grpc_tls.mismatch_hint(refused, "mtls") == ""
    assert "WSGATE_GRPC_TLS" in grpc_tls.mismatch_hint("failed to connect: Socket closed", "mtls")


def test_text_log_messages_stay_on_one_line() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        setup_logging("adapter")
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        logging.getLogger("alembic").info("Running upgrade, API model: tiers,\nkeys and more")
        handler.flush()
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        "adapter INFO alembic: Running upgrade, API model: tiers, keys and more"
    )


def test_lines_are_written_in_batches_and_problems_at_once() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=0.2)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.Logger("batched")
    logger.addHandler(handler)
    logger.info("zero")
    assert stream.getvalue() == "INFO zero\n"  # after a quiet spell: at once
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == "INFO zero\n"  # close behind it: held back for the interval
    logger.warning("three")  # a problem is written at once, with what came before it
    assert stream.getvalue().splitlines() == ["INFO zero", "INFO one", "INFO two", "WARNING three"]
    logger.info("four")
    deadline = time.monotonic() + 5
    while "four" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)  # the flusher thread writes it after the interval
    assert stream.getvalue().splitlines()[-1] == "INFO four"
    logger.info("five")
    handler.flush()  # what logging.shutdown does at exit
    assert stream.getvalue().splitlines()[-1] == "INFO five"


def test_a_component_logs_its_last_lines_when_it_exits() -> None:
    code = (
        "import logging; from wsgate_common.logs import setup_logging; setup_logging('x'); "
        "[logging.getLogger('t').info('line %d', n) for n in range(1000)]"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = out.stderr.splitlines()
    assert len(lines) == 1000 and lines[-1].endswith("x INFO t: line 999"), out.stderr[-500:]


def test_components_turn_c_core_logging_off_unless_asked() -> None:
    code = "import os, adapter, grpc; print(os.environ['GRPC_VERBOSITY'])"
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert quiet.stdout.strip() == "NONE"
    asked = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "GRPC_VERBOSITY": "debug"},
        capture_output=True,
        text=True,
    )
    assert asked.stdout.strip() == "debug"
