"""`payments up` in the foreground: every process starts, the banner tells how
to use them, a signal stops everything with exit 0, a dead child exits 1.

Each test runs its own stack on free ports, on an embedded Postgres in a
temporary directory (DATABASE_URL unset for the child)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from payments.devdb import free_port
from payments.stack import DEV_TOKENS
from tests.cli.conftest import run_cli


class Up:
    def __init__(self, tmp: Path) -> None:
        self.grpc_port = free_port()
        self.output = tmp / "up.out"
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        argv = [sys.executable, "-m", "payments.cli", "up", "--data-dir", str(tmp / "data")]
        argv += ["--grpc-port", str(self.grpc_port), "--sim-port", str(free_port())]
        argv += ["--metrics-port", str(free_port()), "--gateway-port", str(free_port())]
        argv += ["--reconciler-port", str(free_port())]
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while "payments stack is up" not in self.text:
            assert self.proc.poll() is None, self.text
            assert time.monotonic() < deadline, self.text
            time.sleep(0.2)

    def child(self, name: str) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children():
            if any(name in part for part in child.cmdline()):
                return child
        raise AssertionError(f"no {name} child")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    running = Up(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_up_prints_how_to_use_it_and_stops_on_sigterm(up: Up) -> None:
    up.wait_up()
    text = up.text
    assert f"127.0.0.1:{up.grpc_port}" in text
    assert "postgresql://" in text
    assert "/metrics" in text
    for token in DEV_TOKENS.values():
        assert token in text
    assert "payments pay" in text
    assert "payment-svc | " in text  # children's lines, prefixed with their names
    children = psutil.Process(up.proc.pid).children()

    result = run_cli(
        "pay", "--amount", "100", "--currency", "USD", "--payment-method", "pm_card_visa",
        "--json", env={"PAYMENTS_TARGET": f"127.0.0.1:{up.grpc_port}"},
    )  # fmt: skip
    assert json.loads(result.stdout)["status"] == "PAYMENT_STATUS_SUCCEEDED", result.stderr

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(60) == 0, up.text
    assert "stopped" in up.text
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_up_exits_1_naming_a_child_that_died(up: Up) -> None:
    up.wait_up()
    up.child("provider-sim").kill()
    assert up.proc.wait(60) == 1, up.text
    assert "provider-sim was killed by SIGKILL" in up.text
    assert "stopped" in up.text
