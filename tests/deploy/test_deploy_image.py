"""The image: hadolint clean, multi-stage, a numeric non-root user, an
exec-form entrypoint, and a build context of only what the build needs."""

from __future__ import annotations

import json
import re

from deploy_testkit import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def final_stage() -> list[str]:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "a multi-stage build"
    return [line for line in lines[stages[-1] :] if line and not line.startswith("#")]


def test_deploy_dockerfile_is_hadolint_clean() -> None:
    run(tool("hadolint"), str(DOCKERFILE))


def test_deploy_image_runs_as_a_numeric_user_with_an_exec_form_entrypoint() -> None:
    stage = final_stage()
    (user,) = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user)
    (entrypoint,) = [line[len("ENTRYPOINT ") :] for line in stage if line.startswith("ENTRYPOINT ")]
    assert isinstance(json.loads(entrypoint), list)
    (cmd,) = [line[len("CMD ") :] for line in stage if line.startswith("CMD ")]
    assert json.loads(cmd) == ["payment-svc"]
    # No compiler is installed into the final stage.
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", line) for line in stage)
    assert any(line.startswith("COPY --from=") for line in stage)


def test_deploy_build_context_is_only_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)


def test_deploy_image_installs_the_lock_with_hashes_then_the_project_alone() -> None:
    runs = [line for line in DOCKERFILE.read_text().splitlines() if "pip install" in line]
    lock = [line for line in runs if "-r requirements.lock" in line]
    assert lock, "the dependencies come from requirements.lock"
    assert all("--require-hashes" in line for line in lock)
    project = [line for line in runs if line.rstrip(" \\").endswith(" .")]
    assert project, "the project is installed"
    assert all("--no-deps" in line for line in project), "nothing resolved at build time"
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()
    pins = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
    assert pins, "requirements.lock pins exact versions"
    assert all(line.rstrip().endswith("\\") for line in pins), "each pin carries its hashes"
