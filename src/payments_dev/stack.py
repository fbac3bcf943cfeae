"""Runs the platform's processes locally: `payments up`, the benchmark and the
end-to-end tests all start them through this one module.

    Stack.start()
      database: DATABASE_URL, or an embedded Postgres (devdb.LocalPostgres)
      migrations (payment-svc migrate)
      payment-svc            gRPC  127.0.0.1:50051, metrics 127.0.0.1:9101
      webhook-gateway        HTTP  127.0.0.1:8080 (/webhooks/stripe, /metrics)
      provider-sim           HTTP  127.0.0.1:12111, webhooks to the gateway
                             (books in config.sim_state across restarts, when set)
      reconciler             metrics 127.0.0.1:9102 (scheduled jobs)

Each child is a real process running its console entry point; its output is
either copied line by line with a `name | ` prefix or written to a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from payments_dev.devdb import LocalPostgres, free_port, port_is_free

# `payments up` keeps provider-sim's books in its data directory under this name.
SIM_STATE_FILE = "provider-sim.sqlite3"

DEV_TOKENS = {
    "merchant": "dev-merchant-token",
    "merchant-2": "dev-merchant-2-token",
    "gateway": "dev-gateway-token",
    "reconciler": "dev-reconciler-token",
    "dispatcher": "dev-dispatcher-token",
}


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    name: str = "process",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def redact_dsn(dsn: str) -> str:
    """A database URL as it may be shown: its password masked."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# One colour a process, so that interleaved lines are told apart at a glance.
_COLOURS = {
    "payment-svc": "36",  # cyan
    "webhook-gateway": "35",  # magenta
    "provider-sim": "33",  # yellow
    "reconciler": "34",  # blue
    "webhook-dispatcher": "32",  # green
}
_WIDTH = 18


def console_lines(name: str) -> Callable[[bytes], bytes]:
    """A child's JSON log lines as a person reads them (structlog's console
    renderer: time, level, event, then the fields), aligned behind the
    process's name in its colour; a line that is not a JSON object is shown
    as it is. The children always log JSON (payments_kit/logs.py): this
    only changes what `payments up --log-format console` shows."""
    import structlog

    renderer = structlog.dev.ConsoleRenderer(colors=True)
    colour = _COLOURS.get(name, "37")
    prefix = f"\x1b[{colour}m{name:>{_WIDTH}}\x1b[0m | ".encode()

    def render(line: bytes) -> bytes:
        try:
            event = json.loads(line)
        except ValueError:
            return prefix + line
        if not isinstance(event, dict) or "event" not in event:
            return prefix + line
        event.pop("process", None)  # the prefix says it
        level = str(event.get("level", "info"))
        text = renderer(None, level, event)
        return prefix + str(text).encode() + b"\n"

    return render


@dataclass
class Process:
    """One child process, its output prefixed or captured to a file."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path | None = None
    prefix_output: bool = True
    # How a line of the child's output is shown (console_lines); None: as it
    # is, after the `name | ` prefix.
    render: Callable[[bytes], bytes] | None = None
    popen: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None
    _log_file: IO[bytes] | None = None

    def start(self) -> None:
        out: int | IO[bytes]
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log_file
        elif self.prefix_output:
            out = subprocess.PIPE
        else:
            out = subprocess.DEVNULL
        self.popen = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        if out is subprocess.PIPE:
            self._pump = threading.Thread(target=self._copy_output, daemon=True)
            self._pump.start()

    def restart(self) -> None:
        """Starts the same command again after the process exited."""
        assert not self.running, f"{self.name} is still running"
        if self._pump is not None:
            self._pump.join(2)
            self._pump = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.start()

    def _copy_output(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        prefix = f"{self.name:>{_WIDTH}} | ".encode()
        for line in self.popen.stdout:
            sys.stdout.buffer.write(self.render(line) if self.render else prefix + line)
            sys.stdout.buffer.flush()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._pump is not None:
            self._pump.join(2)
        if self._log_file is not None:
            self._log_file.close()
        return self.popen.returncode


def _bin(name: str) -> str:
    """The console script beside the running interpreter (same venv), never
    one found on PATH: another install's payment-svc would run other code."""
    candidate = Path(sys.executable).parent / name
    if not candidate.is_file():
        raise FileNotFoundError(
            f"{name} is not installed beside {sys.executable}: install the project "
            "into this environment (scripts/bootstrap)"
        )
    return str(candidate)


@dataclass
class StackConfig:
    database_url: str | None = None
    data_dir: Path = Path(".payments")
    embedded_pg_port: int | None = None
    sim_port: int = 12111
    grpc_port: int = 50051
    metrics_port: int = 9101
    gateway_port: int = 8080
    reconciler_port: int = 9102
    dispatcher_port: int = 9104
    # webhook-dispatcher runs too (tests of the session's stack run their
    # own dispatchers instead, with short retry schedules, to kill them).
    with_dispatcher: bool = True
    log_dir: Path | None = None  # None: prefixed lines on our stdout
    # "json": the children's lines as they are; "console": rendered for a person
    log_format: str = "json"
    # provider-sim keeps its books in this file across restarts; None: in memory.
    sim_state: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, **fields: Any) -> StackConfig:
        """A stack that can run beside others: every port picked free."""
        ports = (
            "sim_port",
            "grpc_port",
            "metrics_port",
            "gateway_port",
            "reconciler_port",
            "dispatcher_port",
        )
        return cls(**{name: free_port() for name in ports} | fields)


# Who calls whom: the reconciler and the gateway call payment-svc, which calls
# the provider; they stop in this order, so that no caller outlives its callee.
STOP_ORDER = (
    "webhook-dispatcher",
    "reconciler",
    "webhook-gateway",
    "payment-svc",
    "provider-sim",
)


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.postgres: LocalPostgres | None = None
        self.processes: dict[str, Process] = {}
        self.database_url = config.database_url or ""

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.config.sim_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.config.metrics_port}/metrics"

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "STRIPE_API_BASE": self.sim_url,
            "PAYMENT_SVC_LISTEN": self.grpc_target,
            "PAYMENT_SVC_METRICS_LISTEN": f"127.0.0.1:{self.config.metrics_port}",
            "PROVIDER_SIM_PORT": str(self.config.sim_port),
            "PROVIDER_SIM_WEBHOOK_URL": f"{self.gateway_url}/webhooks/stripe",
            "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{self.config.gateway_port}",
            "PAYMENT_SVC_TARGET": self.grpc_target,
            "RECONCILER_METRICS_LISTEN": f"127.0.0.1:{self.config.reconciler_port}",
            "WEBHOOK_DISPATCHER_METRICS_LISTEN": f"127.0.0.1:{self.config.dispatcher_port}",
            **self.config.extra_env,
        }

    def _start(self, name: str, argv: list[str], port: int) -> Process:
        # Something else on the port would be taken for our child.
        if not port_is_free(port):
            raise RuntimeError(f"cannot start {name}: port {port} is already in use")
        proc = self._process(name, argv)
        proc.start()
        wait_for_port("127.0.0.1", port, 30, proc.popen, name)
        return proc

    def _process(self, name: str, argv: list[str]) -> Process:
        log_path = self.config.log_dir / f"{name}.log" if self.config.log_dir else None
        render = console_lines(name) if self.config.log_format == "console" else None
        proc = Process(name, argv, self.env(), log_path=log_path, render=render)
        self.processes[name] = proc
        return proc

    def start_database(self) -> None:
        if not self.database_url:
            self.postgres = LocalPostgres(
                self.config.data_dir / "pgdata", port=self.config.embedded_pg_port or free_port()
            )
            self.postgres.start()
            self.database_url = self.postgres.dsn
        migrate = subprocess.run(
            [_bin("payment-svc"), "migrate"],
            env={**os.environ, **self.env()},
            capture_output=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(
                f"migrations failed:\n{migrate.stdout.decode()}{migrate.stderr.decode()}"
            )

    def start_provider_sim(self) -> Process:
        state = self.config.sim_state
        argv = [_bin("provider-sim"), *(["--state", str(state)] if state else [])]
        return self._start("provider-sim", argv, self.config.sim_port)

    def start_payment_svc(self) -> Process:
        return self._start("payment-svc", [_bin("payment-svc")], self.config.grpc_port)

    def start_webhook_gateway(self) -> Process:
        return self._start("webhook-gateway", [_bin("webhook-gateway")], self.config.gateway_port)

    def start_reconciler(self) -> Process:
        return self._start("reconciler", [_bin("reconciler")], self.config.reconciler_port)

    def start_webhook_dispatcher(self) -> Process:
        return self._start(
            "webhook-dispatcher", [_bin("webhook-dispatcher")], self.config.dispatcher_port
        )

    def start(self, progress: Callable[[str], None] | None = None) -> None:
        """Every process, callees before callers: the provider's first webhook
        finds a gateway, and the gateway a payment service; the reconciler
        and the webhook dispatcher ask payment-svc. `progress` is told each
        step as it is done."""
        tell = progress or (lambda line: None)
        tell(
            "database: starting the embedded Postgres, then migrations"
            if not self.database_url
            else "database: DATABASE_URL given; migrations"
        )
        self.start_database()
        tell(f"database: ready, migrations applied ({redact_dsn(self.database_url)})")
        steps: list[tuple[str, Callable[[], Process], str]] = [
            ("payment-svc", self.start_payment_svc, self.grpc_target),
            ("webhook-gateway", self.start_webhook_gateway, self.gateway_url),
            ("provider-sim", self.start_provider_sim, self.sim_url),
            ("reconciler", self.start_reconciler, f"metrics :{self.config.reconciler_port}"),
        ]
        if self.config.with_dispatcher:
            steps.append(
                (
                    "webhook-dispatcher",
                    self.start_webhook_dispatcher,
                    f"metrics :{self.config.dispatcher_port}",
                )
            )
        for name, start, where in steps:
            start()
            tell(f"{name}: listening ({where})")

    def stop(self, on_stop: Callable[[str], None] | None = None) -> None:
        """Callers first (STOP_ORDER), then what they call, then the database;
        on_stop(name) before each."""
        known = [name for name in STOP_ORDER if name in self.processes]
        others = [name for name in reversed(list(self.processes)) if name not in STOP_ORDER]
        for name in known + others:
            if on_stop is not None:
                on_stop(name)
            self.processes[name].stop()
        if self.postgres is not None:
            self.postgres.stop()


async def wait_serving(target: str, timeout: float = 30.0) -> None:
    """Waits until payment-svc's health says SERVING (database reachable)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service="payments.v1.PaymentService"), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"payment-svc at {target} not SERVING after {timeout}s")
