"""No production process imports a development-only package.

The image has none of them (requirements.lock, scripts/check-install), but
the tests run with the dev extras installed, so an import that slipped onto a
production path would pass every other test and crash-loop in Kubernetes.
Here each console script runs in a child interpreter where importing one of
them fails as it would in the image."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check_install() -> object:
    """scripts/check_install.py, whose DEV_ONLY the image's check uses too."""
    spec = importlib.util.spec_from_file_location(
        "check_install", ROOT / "scripts/check_install.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEV_ONLY_DISTRIBUTIONS: dict[str, tuple[str, ...]] = _check_install().DEV_ONLY  # type: ignore[attr-defined]
DEV_ONLY = tuple(m for modules in DEV_ONLY_DISTRIBUTIONS.values() for m in modules)
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


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_development_package_is_listed_as_development_only() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    missing = sorted({_name(r) for r in extras["dev"]} - set(DEV_ONLY_DISTRIBUTIONS))
    assert not missing, f"add to DEV_ONLY in scripts/check_install.py: {missing}"
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {_name(line) for line in lock.splitlines() if "==" in line}
    assert not pinned & set(DEV_ONLY_DISTRIBUTIONS), "a dev-only package is in the image's lock"


@pytest.mark.parametrize(
    "command",
    [
        "pay",
        "get",
        "list",
        "events",
        "refund",
        "refunds",
        "watch",
        "reconcile",
        "discrepancies",
        "discrepancies resolve",
        "quarantine",
        "quarantine replay",
    ],
)
def test_the_operator_commands_load_without_development_packages(command: str) -> None:
    result = run_without_dev_tools("payments", *command.split(), "--help")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("payments", ["up"]),
        ("payments", ["bench"]),
        ("payments", ["bench-sweep"]),
        ("payments", ["soak"]),
    ],
)
def test_development_commands_say_in_one_line_what_to_install(script: str, args: list[str]) -> None:
    result = run_without_dev_tools(script, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert DEV_HINT in lines[0]
    assert "Traceback" not in result.stderr
