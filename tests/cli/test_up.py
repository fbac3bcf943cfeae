"""`payments up` in the foreground: every process starts, the banner tells how
to use them, a signal stops everything (callers first) with exit 0, a dead
child is restarted while the others keep running, and a child that keeps
crashing stops the stack with exit 1.

Each test runs its own stack on free ports, on an embedded Postgres in a
temporary directory (DATABASE_URL unset for the child)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from payments_dev.devdb import free_port
from payments_dev.stack import DEV_TOKENS, console_lines
from tests.cli.conftest import run_cli


class Up:
    def __init__(self, *args: str) -> None:
        # Not under pytest's tmp_path: another pytest session starting resets
        # pytest-of-USER to 0700, and the embedded cluster runs as another
        # user when we are root (its pg_ctl stop then fails).
        self.tmp = Path(tempfile.mkdtemp(prefix="payments-up-"))
        self.grpc_port = free_port()
        self.reconciler_port = free_port()
        self.output = self.tmp / "up.out"
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        argv = [
            sys.executable,
            "-m",
            "payments_cli.cli",
            "up",
            "--data-dir",
            str(self.tmp / "data"),
        ]
        argv += ["--grpc-port", str(self.grpc_port), "--sim-port", str(free_port())]
        argv += ["--metrics-port", str(free_port()), "--gateway-port", str(free_port())]
        argv += ["--reconciler-port", str(self.reconciler_port)]
        argv += ["--dispatcher-port", str(free_port()), *args]
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
        shutil.rmtree(self.tmp, ignore_errors=True)

    def children(self) -> dict[str, int]:
        """The stack's processes by name, their pids."""
        names = (
            "payment-svc",
            "webhook-gateway",
            "provider-sim",
            "reconciler",
            "webhook-dispatcher",
        )
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                for name in names:
                    if any(part.endswith(name) for part in child.cmdline()):
                        found[name] = child.pid
        return found

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert self.proc.poll() is None, self.text
            assert time.monotonic() < deadline, self.text
            time.sleep(0.1)


@pytest.fixture
def up() -> Iterator[Up]:
    running = Up()
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
    # Not a terminal: the children's JSON lines as they wrote them.
    assert any(line.startswith(f"{'payment-svc':>18} | {{") for line in text.splitlines()), text
    # Its progress while it starts, in order, before the banner.
    steps = [
        "payments up: database: starting the embedded Postgres",
        "payments up: database: ready, migrations applied",
        "payments up: payment-svc: listening",
        "payments up: webhook-gateway: listening",
        "payments up: provider-sim: listening",
        "payments up: reconciler: listening",
        "payments up: webhook-dispatcher: listening",
        "payments up: payment-svc: SERVING",
        "payments stack is up",
    ]
    at = [text.index(step) for step in steps]
    assert at == sorted(at), text
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


def test_up_on_a_terminal_shows_the_childrens_logs_for_a_person() -> None:
    """--log-format console (auto's choice on a terminal): each child's JSON
    lines rendered by structlog's console renderer, aligned behind the
    process's name in its colour."""
    up = Up("--log-format", "console")
    try:
        up.wait_up()
        lines = [line for line in up.text.splitlines() if "payment-svc\x1b[0m | " in line]
        assert lines, up.text
        assert all(f"\x1b[36m{'payment-svc':>18}\x1b[0m | " in line for line in lines)
        assert not any(line.split(" | ", 1)[1].startswith("{") for line in lines), lines
        assert any("payment_svc_started" in line and "grpc_port" in line for line in lines)
    finally:
        up.stop()


def test_console_lines_render_json_and_pass_anything_else() -> None:
    render = console_lines("reconciler")
    line = b'{"event": "run_finished", "level": "info", "job": "sweep", "process": "reconciler"}\n'
    shown = render(line).decode()
    assert shown.startswith(f"\x1b[34m{'reconciler':>18}\x1b[0m | ")
    assert "run_finished" in shown and "job" in shown and "sweep" in shown
    assert '"event"' not in shown and shown.endswith("\n")
    plain = f"\x1b[34m{'reconciler':>18}\x1b[0m | plain text\n".encode()
    assert render(b"plain text\n") == plain
    assert render(b"[1, 2]\n").endswith(b"| [1, 2]\n")


def pay(up: Up) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "pay", "--amount", "100", "--currency", "USD", "--payment-method", "pm_card_visa",
        "--json", env={"PAYMENTS_TARGET": f"127.0.0.1:{up.grpc_port}"},
    )  # fmt: skip


def test_up_restarts_a_killed_child_and_the_others_keep_running(up: Up) -> None:
    up.wait_up()
    before = up.children()
    assert len(before) == 5, before

    os.kill(before["payment-svc"], signal.SIGKILL)
    up.wait_for("payment-svc was killed by SIGKILL; restarting it")
    up.wait_for("payment-svc restarted")
    deadline = time.monotonic() + 30
    while (result := pay(up)).returncode != 0:  # until the new one serves
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.2)
    assert json.loads(result.stdout)["status"] == "PAYMENT_STATUS_SUCCEEDED"

    after = up.children()
    assert after["payment-svc"] != before["payment-svc"]
    others = ("webhook-gateway", "provider-sim", "reconciler", "webhook-dispatcher")
    assert {n: after[n] for n in others} == {n: before[n] for n in others}
    assert up.proc.poll() is None

    up.proc.send_signal(signal.SIGINT)  # Ctrl-C: everything, callers first
    assert up.proc.wait(60) == 0, up.text
    stopping = [line.split()[-1] for line in up.text.splitlines() if "up: stopping " in line]
    assert stopping == [
        "webhook-dispatcher",
        "reconciler",
        "webhook-gateway",
        "payment-svc",
        "provider-sim",
    ]
    assert not any(psutil.pid_exists(pid) for pid in after.values())


@pytest.fixture
def up_crash_limit_2() -> Iterator[Up]:
    running = Up("--crash-limit", "2", "--crash-window", "60")
    try:
        yield running
    finally:
        running.stop()


def test_up_exits_1_naming_a_child_that_keeps_crashing(up_crash_limit_2: Up) -> None:
    up = up_crash_limit_2
    up.wait_up()
    before = up.children()
    os.kill(before["reconciler"], signal.SIGKILL)
    # Its port taken from now on, every restart of the reconciler exits 1.
    with socket.socket() as squatter:
        deadline = time.monotonic() + 5
        while True:
            try:
                squatter.bind(("127.0.0.1", up.reconciler_port))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        squatter.listen()
        assert up.proc.wait(60) == 1, up.text
    text = up.text
    assert "reconciler was killed by SIGKILL; restarting it" in text
    assert "reconciler exited with code 1; restarting it" in text
    assert "reconciler crashed 3 times within 60 s" in text
    # Until then the others ran on, untouched.
    assert text.count("restarted (pid") == 2
    assert "stopped" in text
