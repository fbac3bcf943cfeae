"""No production process imports a development-only package.

The image has none of them (requirements.lock, scripts/check-install), but
the tests run with the dev extras installed, so an import that slipped onto a
production path would pass every other test and crash-loop in Kubernetes.
Here each console script runs in a child interpreter where importing one of
them fails as it would in the image."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DEV_ONLY = (
    "psutil",
    "pgserver",
    "hdrh",
    "hypothesis",
    "pytest",
    "mypy",
    "ruff",
    "standardwebhooks",
)
# console script -> its entry module (pyproject.toml [project.scripts])
ENTRY_POINTS = {
    "payment-svc": "payment_svc.main",
    "provider-sim": "provider_sim.main",
    "webhook-gateway": "webhook_gateway.main",
    "reconciler": "reconciler.main",
    "webhook-dispatcher": "webhook_dispatcher.main",
    "payments": "payments_cli.cli",
}
DEV_HINT = "pip install 'payments-platform[dev]'"

_RUN = textwrap.dedent(
    """
    import importlib, importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))
    assert not BLOCKED & set(sys.modules), "a development-only module is loaded at start"

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    module, script, *args = sys.argv[2:]
    sys.argv = [script, *args]
    importlib.import_module(module).main()
    """
)


def run_without_dev_tools(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", _RUN, ",".join(DEV_ONLY), ENTRY_POINTS[script], script, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("script", list(ENTRY_POINTS))
def test_every_console_script_starts_without_development_packages(script: str) -> None:
    result = run_without_dev_tools(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    ["pay", "get", "list", "events", "reconcile", "discrepancies"],
)
def test_the_operator_commands_load_without_development_packages(command: str) -> None:
    result = run_without_dev_tools("payments", command, "--help")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("script", "args"),
    [("payments", ["up"]), ("payments", ["bench"]), ("payments", ["bench-sweep"])],
)
def test_development_commands_say_in_one_line_what_to_install(script: str, args: list[str]) -> None:
    result = run_without_dev_tools(script, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert DEV_HINT in lines[0]
    assert "Traceback" not in result.stderr
