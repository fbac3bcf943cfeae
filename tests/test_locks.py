"""The tests run on the image's versions: requirements-dev.lock (what
scripts/bootstrap installs) pins every package of requirements.lock (what the
image installs) at the same version, with hashes."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?: ; ([^\\]+?))? *\\$")


def pins(name: str) -> dict[tuple[str, str], str]:
    """(package, marker) -> version; every pin followed by its hashes."""
    lines = (ROOT / name).read_text().splitlines()
    found: dict[tuple[str, str], str] = {}
    for i, line in enumerate(lines):
        if match := _PIN.match(line):
            assert lines[i + 1].lstrip().startswith("--hash=sha256:"), line
            package = match[1].lower().replace("_", "-")
            found[(package, match[3] or "")] = match[2]
    return found


def test_the_dev_lock_has_the_images_versions() -> None:
    image, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert len(image) > 30
    # (A marker may differ: a package the image needs on Windows only, the
    # dev tools may need everywhere.)
    dev_versions = {(package, version) for (package, _), version in dev.items()}
    different = {
        package: version
        for (package, _), version in image.items()
        if (package, version) not in dev_versions
    }
    assert different == {}


def test_this_environment_is_the_dev_lock() -> None:
    dev = pins("requirements-dev.lock")
    installed = {
        (d.metadata["Name"] or "").lower().replace("_", "-"): d.version
        for d in metadata.distributions()
    }
    # (A pin under a marker is for another Python: not installed here.)
    wrong = {
        package: (version, installed.get(package))
        for (package, marker), version in dev.items()
        if not marker and installed.get(package) != version
    }
    assert wrong == {}, "run scripts/bootstrap"
