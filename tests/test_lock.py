"""requirements.lock: the exact versions the image installs (issue 20, item 6). "Current"
means, deterministically and without asking PyPI: it pins every dependency pyproject.toml
names, at a version within pyproject's range, with its hashes, and names as direct
dependencies exactly pyproject's (a dependency added or dropped without re-locking fails
here). That the pins are complete and agree with each other is `pip check` in the image
build (.ci/image-check). DEVELOPERS.md says how to re-lock."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "requirements.lock"


def _lock() -> dict[str, tuple[str, int, list[str]]]:
    """name -> (version, number of hashes, what it is there for)."""
    pins: dict[str, tuple[str, int, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        found = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if found is None:
            continue
        via = re.findall(r"#[ \t]+(?:via[ \t]+)?(\S.*)", block)
        pins[canonicalize_name(found.group(1))] = (
            found.group(2),
            block.count("--hash=sha256:"),
            [v.strip() for v in via if v.strip() != "via"],
        )
    return pins


def test_the_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    pins = _lock()
    assert pins, "requirements.lock pins nothing"
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: re-lock (DEVELOPERS.md)"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject's {requirement}"
        )
    for name, (version, hashes, _) in pins.items():
        assert hashes >= 1, f"{name}=={version} has no hash"
    direct = {name for name, (_, _, via) in pins.items() if "outreach (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in wanted}, (
        "requirements.lock was made from another dependency list: re-lock (DEVELOPERS.md)"
    )


def test_the_image_installs_exactly_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        "pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock" in dockerfile
    )
    assert "pip install --no-cache-dir --no-deps . && pip check" in dockerfile
    assert "dependencies']" not in dockerfile  # no more ranges read from pyproject.toml
