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
# Meaningless in a container.
NOT_IN_ENV_FILE = {"OUTREACH_OUTBOX"}
# The roles that sign mail: they alone get the DKIM key.
SIGNING = ("worker", "cli")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def env_example() -> dict[str, str]:
    """Every NAME=value line of .env.example, commented-out ones included."""
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)",
)


def compose_config(tmp_path: Path, **changes: str | None) -> tuple[int, str]:
    """`docker-compose config` as an operator's checkout runs it: .env copied from
    .env.example, with `changes` (None: the line taken out)."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    lines = [
        line
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.split("=", 1)[0] not in changes
    ]
    lines += [f"{name}={value}" for name, value in changes.items() if value is not None]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["docker-compose", "--project-directory", str(tmp_path), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    return result.returncode, result.stdout if result.returncode == 0 else result.stderr


@needs_compose
def test_compose_file_validates_with_env_from_the_example(tmp_path: Path) -> None:
    code, out = compose_config(tmp_path)
    assert code == 0, out
    services = yaml.safe_load(out)["services"]
    assert {"postgres", "redis", "mailpit", "migrate", "worker", "web", "proxy", "bounces"} <= set(
        services
    )
    example = env_example()
    for name in ROLES:
        env = services[name]["environment"]
        # As .env says: the bundled services, or any others (below).
        assert env["OUTREACH_DATABASE_URL"] == example["OUTREACH_DATABASE_URL"]
        assert env["OUTREACH_QUEUE_URL"] == example["OUTREACH_QUEUE_URL"]
        assert env["PGPASSWORD"] == example["POSTGRES_PASSWORD"]
        # The settings compose once left out reach every role now (env_file: .env).
        for setting in ("SOFT_BOUNCE_LIMIT", "PAUSE_AFTER_FAILURES", "LEASE_SECONDS", "BATCH_SIZE"):
            assert "OUTREACH_" + setting in env, (name, setting)
    # The bundled Redis wants the password the queue URL carries.
    redis = services["redis"]
    assert redis["command"][-2:] == ["--requirepass", example["REDIS_PASSWORD"]]
    assert f":{example['REDIS_PASSWORD']}@redis:" in example["OUTREACH_QUEUE_URL"]
    # scalable: no fixed container name or host port on the worker
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert (
        services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    )
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    # Every service's log is rotated.
    for name, service in services.items():
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "5"}, name


@needs_compose
def test_the_dkim_key_is_only_where_mail_is_signed(tmp_path: Path) -> None:
    code, out = compose_config(
        tmp_path,
        OUTREACH_DKIM_KEY_FILE="/run/secrets/outreach/dkim.pem",
        OUTREACH_DKIM_SELECTOR="outreach2026",
    )
    assert code == 0, out
    services = yaml.safe_load(out)["services"]
    for name in ROLES:
        mounted = any("/run/secrets/outreach" in str(v) for v in services[name].get("volumes", []))
        env = services[name]["environment"]
        if name in SIGNING:
            assert mounted and env["OUTREACH_DKIM_KEY_FILE"] == "/run/secrets/outreach/dkim.pem"
        else:
            assert not mounted, name
            assert env["OUTREACH_DKIM_KEY_FILE"] == env["OUTREACH_DKIM_SELECTOR"] == "", name


@needs_compose
def test_a_password_with_any_character_and_services_elsewhere(tmp_path: Path) -> None:
    elsewhere = (
        "postgresql+psycopg://outreach:p%40ss@db.citynet.internal:5432/outreach"
        "?sslmode=verify-full&sslrootcert=/run/secrets/outreach/db-ca.pem"
    )
    queue = "rediss://:s3cret@queue.citynet.internal:6380/0"
    code, out = compose_config(
        tmp_path,
        POSTGRES_PASSWORD="p@ss",
        OUTREACH_DATABASE_URL=elsewhere,
        OUTREACH_QUEUE_URL=queue,
    )
    assert code == 0, out
    services = yaml.safe_load(out)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "p@ss"
    for name in ROLES:
        env = services[name]["environment"]
        assert env["OUTREACH_DATABASE_URL"] == elsewhere and env["OUTREACH_QUEUE_URL"] == queue
        assert env["PGPASSWORD"] == "p@ss"


@needs_compose
def test_production_refuses_to_start_without_a_relay(tmp_path: Path) -> None:
    """Never Mailpit by accident: without OUTREACH_SMTP_URL nothing starts."""
    code, out = compose_config(tmp_path, OUTREACH_SMTP_URL=None)
    assert code != 0 and "set OUTREACH_SMTP_URL in .env" in out
    code, out = compose_config(tmp_path, OUTREACH_SMTP_URL="smtp://mailpit:1025?tls=none")
    assert code == 0, out


def test_compose_refuses_to_run_without_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "OUTREACH_DATABASE_URL",
        "OUTREACH_QUEUE_URL",
        "OUTREACH_SMTP_URL",
        "OUTREACH_SECRET_KEY",
        "OUTREACH_BASE_URL",
        "APP_IMAGE",
    ):
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


def test_contact_files_stay_out_of_git_and_of_the_image() -> None:
    """A members.csv or .xlsx dropped into the checkout (campaigns/ is copied into the
    image) is neither committed nor built in; the tracked examples and fixtures stay."""

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    for path in ("members.csv", "campaigns/members.csv", "templates/x.xlsx", "export.xls"):
        assert ignored(path), path
    tracked = subprocess.run(
        ["git", "ls-files", "*.csv", "*.xlsx", "*.xls"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert "examples/contacts.csv" in tracked
    for path in (*tracked, "tests/fixtures/new.xlsx"):
        assert not ignored(path), path
    excluded = (ROOT / ".dockerignore").read_text().split()
    assert {"**/*.csv", "**/*.xlsx", "**/*.xls"} <= set(excluded)
    # The package's own example (the demo reads it) is the one exception.
    assert excluded[-1] == "!outreach/examples/contacts.csv"


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
