"""The deployment files: a Compose file that validates and passes the whole .env to every role,
an image that runs as non-root, nothing published beyond the proxy and the bounce MX, pinned
images, and an .env.example that documents every setting."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from outreach.config import _PARSERS, Settings
from tests.conftest import ROOT

ROLES = ("migrate", "worker", "web", "bounces", "cli")
# Set by docker-compose.yml for the bundled services, or meaningless in a container.
NOT_IN_ENV_FILE = {"OUTREACH_DATABASE_URL", "OUTREACH_QUEUE_URL", "OUTREACH_OUTBOX"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def env_example() -> dict[str, str]:
    """Every NAME=value line of .env.example, commented-out ones included."""
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)",
)
def test_compose_file_validates_with_env_from_the_example(tmp_path: Path) -> None:
    # As an operator sets it up: the checkout, and .env copied from .env.example.
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        ["docker-compose", "--project-directory", str(tmp_path), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"postgres", "redis", "mailpit", "migrate", "worker", "web", "proxy", "bounces"} <= set(
        services
    )
    for name in ROLES:
        env = services[name]["environment"]
        assert env["OUTREACH_DATABASE_URL"].startswith("postgresql+psycopg://outreach:")
        assert env["OUTREACH_QUEUE_URL"] == "redis://redis:6379/0"
        # The settings compose once left out reach every role now (env_file: .env).
        for setting in ("SOFT_BOUNCE_LIMIT", "PAUSE_AFTER_FAILURES", "LEASE_SECONDS", "BATCH_SIZE"):
            assert "OUTREACH_" + setting in env, (name, setting)
    # scalable: no fixed container name or host port on the worker
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert (
        services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    )
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name


def test_compose_refuses_to_run_without_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("POSTGRES_PASSWORD", "OUTREACH_SECRET_KEY", "OUTREACH_BASE_URL", "APP_IMAGE"):
        assert re.search(rf"\${{{variable}:\?", text), variable


def test_every_role_gets_the_whole_env_file() -> None:
    services = compose()["services"]
    for name in ROLES:
        assert services[name]["env_file"] == ".env", name


def test_only_the_proxy_and_the_bounce_mx_are_published_beyond_this_host() -> None:
    services = compose()["services"]
    public = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                public[name] = [*public.get(name, []), str(port)]
    assert public == {"proxy": ["80:80", "443:443"], "bounces": ["25:2525"]}


def test_images_are_pinned() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert env_example()["APP_IMAGE"].split(":")[1][0].isdigit()


def test_web_runs_the_same_gunicorn_configuration_as_outreach_serve() -> None:
    from outreach.gunicorn_conf import command

    web = compose()["services"]["web"]
    assert web["entrypoint"] == ["gunicorn"]
    serve = command("127.0.0.1", 8000, 2)
    assert web["command"][:2] == serve[:2] == ["--config", "python:outreach.gunicorn_conf"]
    assert web["command"][-1] == serve[-1] == "outreach.wsgi:app"
    # gunicorn listens on 0.0.0.0:$PORT, the port its health check asks.
    assert web["environment"]["PORT"] == "8000"
    assert "os.environ['PORT']" in " ".join(web["healthcheck"]["test"])


def test_the_proxy_gets_every_value_its_configuration_uses() -> None:
    proxy = compose()["services"]["proxy"]
    template = (ROOT / "deploy" / "nginx" / "outreach.conf.template").read_text()
    used = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template))
    assert used and used <= set(proxy["environment"])
    assert any("outreach.conf.template:/etc/nginx/templates/" in v for v in proxy["volumes"])


def test_dockerfile_runs_as_non_root_with_one_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER outreach$", text, re.M)
    assert "--uid 10001" in text
    assert 'ENTRYPOINT ["outreach"]' in text
    assert text.count("FROM python:3.11-slim") == 2


def test_keys_and_env_stay_out_of_git_and_of_the_image() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "secrets/" in ignored and ".env" in ignored
    excluded = (ROOT / ".dockerignore").read_text().split()
    assert "secrets" in excluded and ".env" in excluded


def test_env_example_documents_every_setting() -> None:
    documented = env_example()
    readme = (ROOT / "README.md").read_text()
    for key in _PARSERS:
        name = "OUTREACH_" + key.upper()
        assert name in readme, f"{name} is not in README.md"
        assert name in documented or name in NOT_IN_ENV_FILE, f"{name} is not in .env.example"


def test_env_example_passes_only_known_settings() -> None:
    # env_file hands every line to the app, which stops at an unknown OUTREACH_* name.
    env = {k: v for k, v in env_example().items() if k.startswith("OUTREACH_")}
    env.pop("OUTREACH_DKIM_KEY_FILE")  # names a file inside the container
    env.pop("OUTREACH_DKIM_SELECTOR")
    settings = Settings.load(env=env, cwd=ROOT)
    assert settings.soft_bounce_limit == int(env["OUTREACH_SOFT_BOUNCE_LIMIT"])
