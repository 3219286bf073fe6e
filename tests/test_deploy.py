"""The deployment files: a Compose file that validates, an image that runs as non-root, and
an .env.example that documents every setting."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from outreach.config import _PARSERS
from tests.conftest import ROOT


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)",
)
def test_compose_file_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "docker-compose",
            "--env-file",
            str(ROOT / ".env.example"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "redis", "mailpit", "migrate", "worker", "web"} <= set(services)
    for name in ("worker", "web", "migrate"):
        env = services[name]["environment"]
        assert env["OUTREACH_DATABASE_URL"].startswith("postgresql+psycopg://outreach:")
        assert env["OUTREACH_QUEUE_URL"] == "redis://redis:6379/0"
    # scalable: no fixed container name or host port on the worker
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert (
        services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    )
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name


def test_compose_refuses_to_run_without_secrets(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("POSTGRES_PASSWORD", "OUTREACH_SECRET_KEY", "OUTREACH_BASE_URL"):
        assert re.search(rf"\${{{variable}:\?", text), variable


def test_dockerfile_runs_as_non_root_with_one_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER outreach$", text, re.M)
    assert 'ENTRYPOINT ["outreach"]' in text
    assert text.count("FROM python:3.11-slim") == 2


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(OUTREACH_[A-Z_]+)=", text, re.M))
    compose = (ROOT / "docker-compose.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    for key in _PARSERS:
        name = "OUTREACH_" + key.upper()
        assert name in readme, f"{name} is not in README.md"
    for name in documented:
        assert name in compose or name == "OUTREACH_IMAGE", f"{name} does not reach the containers"
    yaml.safe_load((ROOT / "docker-compose.yml").read_text())
