"""`payments up`: the whole stack in the foreground until asked to stop.

    start (database, migrations, provider-sim, payment-svc)
      -> wait for payment-svc SERVING -> print addresses and tokens
      -> supervise: SIGINT / SIGTERM -> stop everything, callers first, exit 0
                    a child exits        -> log its cause (exit code or signal),
                                            restart it after a backoff (0.5 s,
                                            doubling per crash in the window,
                                            at most 30 s); the others keep running
                    a child crashes more than max_crashes times within
                    window_seconds      -> name it, stop everything, exit 1

Children run in their own sessions (stack.py), so Ctrl-C reaches only this
process, which then stops them callers-first (stack.STOP_ORDER). A child that
dies before the stack is up is a failed start (exit 1), not restarted.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

from rich.console import Console
from rich.text import Text

from payments.client import DEFAULT_TARGET
from payments_dev.stack import (
    DEV_TOKENS,
    Process,
    Stack,
    StackConfig,
    redact_dsn,
    wait_serving,
)

_TOKEN_VARIABLES = (
    "PAYMENT_SVC_MERCHANT_TOKENS",
    "PAYMENT_SVC_GATEWAY_TOKEN",
    "PAYMENT_SVC_RECONCILER_TOKEN",
)


class StopRequested(BaseException):
    """Raised in the main thread by SIGINT / SIGTERM (BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _: FrameType | None) -> None:
    raise StopRequested(signum)


def banner(stack: Stack, env: dict[str, str]) -> list[Text]:
    embedded = stack.postgres is not None
    where = f"embedded, data in {stack.config.data_dir / 'pgdata'}" if embedded else "given"
    places = [
        ("payment-svc (gRPC)", stack.grpc_target),
        ("webhook-gateway", f"{stack.gateway_url}/webhooks/stripe"),
        ("provider-sim", stack.sim_url),
        ("metrics", stack.metrics_url),
        ("reconciler", f"http://127.0.0.1:{stack.config.reconciler_port}/metrics"),
        ("webhook-dispatcher", f"http://127.0.0.1:{stack.config.dispatcher_port}/metrics"),
        ("database", f"{redact_dsn(stack.database_url)} ({where})"),
    ]
    if any(env.get(name) for name in _TOKEN_VARIABLES):
        tokens = [("tokens", "from the PAYMENT_SVC_*_TOKEN(S) environment")]
    else:
        tokens = list(DEV_TOKENS.items())
    target = "" if stack.grpc_target == DEFAULT_TARGET else f" --target {stack.grpc_target}"
    example = f"payments pay{target} --amount 1999 --currency USD --payment-method pm_card_visa"
    return [
        Text("── payments stack is up " + "─" * 56, style="bold green"),
        *(Text(f"  {label:<20}{value}") for label, value in places),
        Text("development tokens", style="bold"),
        *(Text(f"  {label:<20}{value}") for label, value in tokens),
        Text("try", style="bold"),
        Text(f"  {example}"),
        Text("Ctrl-C stops everything."),
        Text("─" * 80, style="green"),
    ]


def busy_ports(ports: dict[str, int | None]) -> list[str]:
    """The ports something already listens on: wait_for_port would take that
    something for our child (a second `payments up`, most often)."""
    busy = []
    for name, port in ports.items():
        if not port:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{name} port {port}")
    return busy


def describe_failure(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
        output = (
            exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        )
        text += "\n" + output.strip()
    return text


@dataclass(frozen=True)
class RestartPolicy:
    """A child crashing more than max_crashes times within window_seconds
    stops the stack; before that, each crash is restarted after
    backoff_initial * 2**(crashes in the window - 1), at most backoff_max."""

    max_crashes: int = 5
    window_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def backoff(self, crashes: int) -> float:
        return min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, crashes - 1))


@dataclass
class _Child:
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None  # set while it waits out its backoff


class CrashLoop(Exception):
    """A child crashed too often: the stack stops with exit 1."""


def _first_dead(stack: Stack) -> Process | None:
    return next((p for p in stack.processes.values() if not p.running), None)


def _supervise(
    stack: Stack, policy: RestartPolicy, console: Console, interval: float = 0.1
) -> NoReturn:
    """Restarts dead children until one crash-loops (CrashLoop) or a signal."""
    children = {name: _Child() for name in stack.processes}
    while True:
        now = time.monotonic()
        for name, proc in stack.processes.items():
            child = children[name]
            if child.restart_at is None and not proc.running:
                child.crashes.append(now)
                while child.crashes[0] < now - policy.window_seconds:
                    child.crashes.popleft()
                crashes = len(child.crashes)
                cause = _describe_exit(proc)
                if crashes > policy.max_crashes:
                    raise CrashLoop(
                        f"{name} crashed {crashes} times within {policy.window_seconds:g} s "
                        f"(last: {cause})"
                    )
                delay = policy.backoff(crashes)
                console.print(
                    Text(
                        f"payments up: {cause}; restarting it in {delay:g} s "
                        f"(crash {crashes} of {policy.max_crashes} allowed "
                        f"within {policy.window_seconds:g} s)",
                        "yellow",
                    ),
                    soft_wrap=True,
                )
                child.restart_at = now + delay
            elif child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                proc.restart()
                assert proc.popen is not None
                console.print(Text(f"payments up: {name} restarted (pid {proc.popen.pid})"))
        time.sleep(interval)


def _describe_exit(proc: Process) -> str:
    code = proc.popen.returncode if proc.popen is not None else None
    if code is not None and code < 0:
        return f"{proc.name} was killed by {signal.Signals(-code).name}"
    return f"{proc.name} exited with code {code}"


def run(
    config: StackConfig,
    console: Console,
    env: dict[str, str],
    serving_timeout: float = 60.0,
    policy: RestartPolicy | None = None,
) -> int:
    """Runs the stack until a signal (exit code 0), a failed start or a child
    crashing too often (1)."""
    busy = busy_ports(
        {
            "gRPC": config.grpc_port,
            "provider-sim": config.sim_port,
            "webhook-gateway": config.gateway_port,
            "reconciler": config.reconciler_port,
            "webhook-dispatcher": config.dispatcher_port if config.with_dispatcher else None,
            "metrics": config.metrics_port,
            "Postgres": None if config.database_url else config.embedded_pg_port,
        }
    )
    if busy:
        console.print(Text(f"payments up: already in use: {', '.join(busy)}", "red"))
        return 1
    stack = Stack(config)
    handlers: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
        sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stack.start(lambda line: console.print(Text(f"payments up: {line}", "dim")))
        asyncio.run(wait_serving(stack.grpc_target, serving_timeout))
        console.print(Text("payments up: payment-svc: SERVING (its database reachable)", "dim"))
        for part in banner(stack, env):
            console.print(part, soft_wrap=True)
        _supervise(stack, policy or RestartPolicy(), console)
    except CrashLoop as exc:
        console.print(Text(f"payments up: {exc}; stopping the stack", "red"), soft_wrap=True)
        return 1
    except StopRequested as stop:
        console.print(Text(f"payments up: {stop} received, stopping", "yellow"))
        return 0
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        console.print(
            Text(f"payments up: failed to start: {describe_failure(exc)}", "red"), soft_wrap=True
        )
        failed = _first_dead(stack)
        if failed is not None:
            console.print(Text(f"payments up: {_describe_exit(failed)}", "red"))
        return 1
    finally:
        # A second Ctrl-C must not leave children behind half-stopped.
        for sig in handlers:
            signal.signal(sig, signal.SIG_IGN)
        try:
            stack.stop(lambda name: console.print(f"payments up: stopping {name}"))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            # The embedded Postgres refusing pg_ctl stop, say: told, not a traceback.
            message = f"payments up: could not stop everything: {describe_failure(exc)}"
            console.print(Text(message, "red"), soft_wrap=True)
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        console.print("payments up: stopped")
