"""The documentation's checks are not vacuous: the configuration page matches
the settings code and the check finds each kind of drift; the API reference
is what the protos generate; the README stays short, its first commands the
two a new user runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "configuration.md"


@pytest.fixture(scope="module")
def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_docs_configuration_page_matches_the_settings_code(gen_docs: ModuleType) -> None:
    assert gen_docs.check_configuration(PAGE) == []


def test_docs_configuration_check_finds_each_kind_of_drift(
    gen_docs: ModuleType, tmp_path: Path
) -> None:
    text = PAGE.read_text()
    drifted = (
        text.replace("| `DB_POOL_MAX` | `20` |", "| `DB_POOL_MAX` | `25` |")
        .replace("| `RECONCILER_PAGE_SIZE` | `100` |", "| `RECONCILER_PAGE_SIZE` | `1000` |")
        .replace(
            "| `WEBHOOK_MAX_BODY_BYTES` |",
            "| `WEBHOOK_GATEWAY_NOT_READ` | `1` | invented |\n| `WEBHOOK_MAX_BODY_BYTES` |",
        )
    )
    drifted = re.sub(r"^\| `PROVIDER_SIM_SEED` .*\n", "", drifted, flags=re.MULTILINE)
    drifted = re.sub(r"^\| `PAYMENTS_UP_CRASH_LIMIT` .*\n", "", drifted, flags=re.MULTILINE)
    assert drifted != text
    page = tmp_path / "configuration.md"
    page.write_text(drifted)
    problems = "\n".join(gen_docs.check_configuration(page))
    for expected in (
        "payment-svc: DB_POOL_MAX default '25' is not what the code uses",
        "reconciler: RECONCILER_PAGE_SIZE='1000' is refused",
        "webhook-gateway: the page lists WEBHOOK_GATEWAY_NOT_READ, the code does not read it",
        "provider-sim: the code reads PROVIDER_SIM_SEED, the page does not list it",
        "payments CLI: the code reads PAYMENTS_UP_CRASH_LIMIT, the page does not list it",
    ):
        assert expected in problems, problems
    assert len(problems.splitlines()) == 5, problems


def test_docs_api_reference_is_what_the_protos_generate(
    gen_docs: ModuleType, tmp_path: Path
) -> None:
    descriptors = tmp_path / "payments.binpb"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos"),
            "--include_source_info", f"--descriptor_set_out={descriptors}",
            *map(str, sorted((ROOT / "protos" / "payments" / "v1").glob("*.proto"))),
        ],
        check=True,
    )  # fmt: skip
    generated = gen_docs.api_reference(descriptors)
    assert generated == (ROOT / "docs" / "reference" / "api.md").read_text()
    for name in ("CreatePayment", "WatchPaymentUpdates", "ApplyProviderEvent", "RedriveRefund"):
        assert f"#### {name} " in generated
    for reason in ("DUPLICATE_PAYMENT", "IDEMPOTENCY_KEY_REUSED", "REFUND_EXCEEDS_REMAINING"):
        assert f"| `{reason}` |" in generated


def test_docs_readme_is_short_and_starts_with_up_and_test() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_block = re.search(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    assert first_block is not None
    assert readme.index("```") == first_block.start(), "a command shown before the two"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["./scripts/up", "./scripts/test"]
