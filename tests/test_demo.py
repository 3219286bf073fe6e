"""`outreach demo` from the installed package, in any folder, and its last lines as printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "outreach" / "examples"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no virtualenv on it: as a fresh shell
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def _example_files() -> list[str]:
    return sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file())


@pytest.mark.integration
def test_the_wheel_carries_the_examples(tmp_path: Path) -> None:
    # The Dockerfile builds from these files only: so does this.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "outreach", source / "outreach", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("outreach-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"outreach/examples/{name}" for name in _example_files()}
    assert len(expected) > 10 and expected <= names, sorted(expected - names)


def test_the_package_examples_are_the_repository_examples() -> None:
    """The checkout's campaigns/, templates/ and examples/ (which tests, benchmarks and the
    Docker image use) and the package's copies for the demo say the same."""
    for name in _example_files():
        root = ROOT / ("examples/contacts.csv" if name == "contacts.csv" else name)
        assert root.read_bytes() == (EXAMPLES / name).read_bytes(), (
            f"{root} and outreach/examples/{name} differ: change both"
        )
    for folder in ("campaigns", "templates"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert (EXAMPLES / path.relative_to(ROOT)).is_file(), (
                    f"{path} is not in the package"
                )


@pytest.mark.integration
def test_the_demo_runs_in_any_folder_and_its_last_lines_work_as_printed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere else"
    elsewhere.mkdir()
    outreach = Path(sys.executable).parent / "outreach"
    env = _clean_env()
    result = subprocess.run(
        [str(outreach), "demo", "--dir", "my demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "…" not in result.stdout
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Try it"))
    commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]
    assert len(commands) >= 3 and commands[0].startswith("cd ")
    assert lines[start + 1 :] == [f"  {c}" for c in commands], "the commands are the last lines"
    run = subprocess.run(
        ["bash", "-ec", "\n".join(commands)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2026-12-newsletter: done" in run.stdout
