"""Hypothesis runs derandomized in CI, so that a failure there replays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_PROBE = (
    "import tests.conftest; from hypothesis import settings; "
    "print(settings.default.derandomize, settings.default.database)"
)


@pytest.mark.parametrize(
    ("env", "derandomized"),
    [
        ({"CI": "true"}, True),
        ({}, False),
        ({"CI": ""}, False),
        ({"HYPOTHESIS_PROFILE": "ci"}, True),
    ],
)
def test_ci_loads_the_derandomized_profile(env: dict[str, str], derandomized: bool) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    flag, database = result.stdout.split(maxsplit=1)
    assert flag == str(derandomized)
    if derandomized:
        assert database.strip() == "None"
