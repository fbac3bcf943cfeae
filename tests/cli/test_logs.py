"""Every log record of a process configured by `payments_kit.logs` is redacted:
structlog's and the standard library's (grpcio's own "unexpected error"
with its traceback, asyncpg's, aiohttp's, asyncio's), nested values,
numbers, exception text, warnings and uncaught exceptions. A real process,
a real gRPC server whose handler fails with a card number in its error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pci_cards import find_cards

SCRIPT = r"""
import asyncio, gc, logging, threading, warnings

import grpc
import structlog

from payments_kit import logs

logs.configure("log-test")
log = structlog.get_logger("log_test")
CARD = "4000056655665556"
FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in "5555555555554444")


async def grpc_failure() -> None:
    def fail(request, context):
        raise ValueError(f"invalid input for query argument $5: {CARD}")

    handler = grpc.method_handlers_generic_handler(
        "t.T", {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await channel.unary_unary("/t.T/Fail")(b"")
        except grpc.aio.AioRpcError as error:
            log.warning("rpc_failed", details=error.details())
    await server.stop(None)


async def lost_task() -> None:
    async def boom() -> None:
        raise RuntimeError(f"lost {CARD}")

    task = asyncio.get_running_loop().create_task(boom())
    await asyncio.sleep(0.01)
    del task
    gc.collect()


log.info("nested", detail={"k": [f"card {FULLWIDTH}"]}, number=int(CARD))
log.info(f"event {CARD}", card=CARD.replace("5556", "-5556"))
logging.getLogger("asyncpg").error("DataError: invalid input for query argument $5: %s", CARD)
logging.getLogger("aiohttp.server").error("bad header %r", {"x": CARD})
try:
    raise ValueError(f"boom {FULLWIDTH}")
except ValueError:
    logging.getLogger("grpc._cython.cygrpc").exception("Unexpected error %s", CARD)
    log.exception("handled")
asyncio.run(grpc_failure())
asyncio.run(lost_task())
warnings.warn(f"careful {CARD}")
thread = threading.Thread(target=lambda: 1 / 0 if CARD else None)
thread.start()
thread.join()
logging.getLogger("done").warning("last line before the uncaught one")
raise SystemError(f"uncaught {CARD}")
"""


def test_every_record_of_every_logger_is_redacted(tmp_path: Path) -> None:
    script = tmp_path / "log_everything.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert find_cards(output) == [], output
    records = [json.loads(line) for line in done.stdout.splitlines()]
    events = " ".join(str(r.get("event")) for r in records)
    # Every record arrived (redacted, not dropped), as JSON lines on stdout.
    for expected in (
        "nested",
        "DataError",
        "bad header",
        "Unexpected error",
        "raised by servicer method",  # grpcio's own, with the handler's traceback
        "Task exception was never retrieved",  # asyncio's
        "handled",
        "rpc_failed",
        "careful",
        "uncaught_thread_exception",
        "last line",
        "uncaught_exception",
    ):
        assert expected in events, (expected, output)
    assert "[REDACTED-PAN]" in output
    assert done.stderr == ""
