"""The `payments` CLI run as its users run it: a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping

import pytest

from payments_dev.stack import DEV_TOKENS, Stack

Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payments_cli.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli(stack: Stack) -> Cli:
    """Runs `payments ARGS...` against the session's stack as the first merchant."""
    target = {"PAYMENTS_TARGET": stack.grpc_target, "PAYMENTS_TOKEN": DEV_TOKENS["merchant"]}

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**target, **env})

    return run
