"""The stack runs the console scripts of its own environment, never ones
found on PATH (another checkout's install would run other code)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from payments_dev.stack import _bin


def test_the_stack_runs_the_scripts_beside_its_interpreter() -> None:
    assert _bin("payment-svc") == str(Path(sys.executable).parent / "payment-svc")


def test_a_script_missing_beside_the_interpreter_is_an_error_not_a_path_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "elsewhere"
    on_path.mkdir()
    impostor = on_path / "payment-svc"
    impostor.write_text("#!/bin/sh\nexit 0\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    with pytest.raises(FileNotFoundError, match="payment-svc is not installed beside"):
        _bin("payment-svc")
