"""webhook-gateway as a real process (its console script): SIGTERM stops accepting,
lets the request in flight finish, and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_testkit import body_of, event, signed

from payments_dev.devdb import free_port
from payments_dev.stack import wait_for_port

GATEWAY = str(Path(sys.executable).parent / "webhook-gateway")
FORWARD_TIMEOUT = 2.0


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A payment-svc that accepts connections and never answers: calls hang until
    their deadline, which keeps a request in flight for as long as we need."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def gateway_process(
    tmp_path: Path, black_hole: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log_path = tmp_path / "webhook-gateway.log"
    env = {
        **os.environ,
        "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "PAYMENT_SVC_TARGET": black_hole,
        "WEBHOOK_SECRETS": "whsec_test_newest",
        "WEBHOOK_FORWARD_TIMEOUT_SECONDS": str(FORWARD_TIMEOUT),
        "WEBHOOK_GATEWAY_DRAIN_SECONDS": "10",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [GATEWAY], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        yield proc, port, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    gateway_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log_path = gateway_process
    body = body_of(event())
    head = "".join(
        [
            "POST /webhooks/stripe HTTP/1.1\r\n",
            f"Host: 127.0.0.1:{port}\r\n",
            "Content-Type: application/json\r\n",
            f"Stripe-Signature: {signed(body)['Stripe-Signature']}\r\n",
            f"Content-Length: {len(body)}\r\n\r\n",
        ]
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    started = time.monotonic()
    # In flight: verified, and waiting for payment-svc when SIGTERM arrives.
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)

    # No new connections are accepted any more...
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert proc.poll() is None, "exited with a request in flight"

    # ...while the one in flight gets its answer: payment-svc never confirmed it, so
    # 503 at the forward deadline (the provider retries), not a dropped connection.
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.startswith(b"HTTP/1.1 503"), status_line
    assert time.monotonic() - started >= FORWARD_TIMEOUT - 0.5
    response = await reader.read()
    assert b"payment_service_timeout" in response
    writer.close()

    assert await asyncio.to_thread(proc.wait, 15) == 0
    log = log_path.read_text()
    assert "webhook_gateway_draining" in log
    assert "webhook_gateway_stopped" in log
    assert "Traceback" not in log


async def test_sigterm_when_idle_exits_0(
    gateway_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, _, log_path = gateway_process
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert "Traceback" not in log_path.read_text()
