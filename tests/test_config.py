from pathlib import Path

import pytest

from outreach.config import Settings, parse_rate
from outreach.errors import ConfigError


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = Settings.load(env={}, cwd=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve()}/outreach.db"
    assert s.queue_url == f"sqlite:///{tmp_path.resolve()}/outreach-queue.db"
    assert s.smtp is None and s.outbox == tmp_path.resolve() / "outbox"
    assert s.rate.per_second == 50 and s.max_attempts == 8 and s.retry_delay == 60


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    (tmp_path / "outreach.toml").write_text(
        'rate = "10/s"\nbase_url = "https://mail.example.org"\nmax_attempts = 3\n'
    )
    s = Settings.load(env={"OUTREACH_RATE": "3000/h"}, cwd=tmp_path)
    assert s.rate.per_second == pytest.approx(3000 / 3600)
    assert s.base_url == "https://mail.example.org" and s.max_attempts == 3


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("OUTREACH_DATABASE_URL", "mysql://x/y", "OUTREACH_DATABASE_URL: 'mysql://x/y'"),
        ("OUTREACH_DATABASE_URL", "not a url", "OUTREACH_DATABASE_URL"),
        ("OUTREACH_QUEUE_URL", "amqp://x", "OUTREACH_QUEUE_URL"),
        ("OUTREACH_SMTP_URL", "smtp://host?tls=maybe", "tls must be starttls, ssl or none"),
        ("OUTREACH_SMTP_URL", "http://host", "OUTREACH_SMTP_URL"),
        ("OUTREACH_BASE_URL", "ftp://x", "OUTREACH_BASE_URL"),
        ("OUTREACH_RATE", "fast", "write e.g. 14/s"),
        ("OUTREACH_RATE", "14", "needs a unit"),
        ("OUTREACH_MAX_ATTEMPTS", "0", "OUTREACH_MAX_ATTEMPTS: '0' must be at least 1"),
        ("OUTREACH_FROM", "not an address", "OUTREACH_FROM"),
        ("OUTREACH_FROM", "CityNet <홍보@citynet-ap.org>", "non-ASCII characters before the @"),
        ("OUTREACH_DKIM_KEY_FILE", "/nonexistent/key.pem", "no such file"),
        ("OUTREACH_DATABSE_URL", "sqlite:///x.db", "OUTREACH_DATABSE_URL is not a known setting"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(env={name: value}, cwd=tmp_path)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_toml_key_and_bad_toml(tmp_path: Path) -> None:
    (tmp_path / "outreach.toml").write_text('databse_url = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'databse_url'"):
        Settings.load(env={}, cwd=tmp_path)
    (tmp_path / "outreach.toml").write_text("rate = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(env={}, cwd=tmp_path)


def test_test_variables_are_not_settings(tmp_path: Path) -> None:
    Settings.load(env={"OUTREACH_TEST_POSTGRES_URL": "postgresql://x"}, cwd=tmp_path)


def test_smtp_url_parts(tmp_path: Path) -> None:
    s = Settings.load(
        env={"OUTREACH_SMTP_URL": "smtp://user%40x:p%3Ass@relay:2525?tls=none"}, cwd=tmp_path
    )
    assert s.smtp is not None
    assert (s.smtp.host, s.smtp.port, s.smtp.tls) == ("relay", 2525, "none")
    assert (s.smtp.username, s.smtp.password) == ("user@x", "p:ss")
    smtps = Settings.load(env={"OUTREACH_SMTP_URL": "smtps://relay"}, cwd=tmp_path).smtp
    assert smtps is not None and (smtps.port, smtps.tls) == (465, "ssl")


def test_postgres_url_gets_psycopg_driver(tmp_path: Path) -> None:
    s = Settings.load(env={"OUTREACH_DATABASE_URL": "postgresql://u@h/db"}, cwd=tmp_path)
    assert s.database_url.startswith("postgresql+psycopg://")


def test_rates() -> None:
    assert parse_rate("0").unlimited
    assert parse_rate("14/s").per_second == 14
    assert parse_rate("600/m").per_second == 10
    assert parse_rate("3600/h").per_second == 1


def test_dkim_needs_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be set together"):
        Settings.load(env={"OUTREACH_DKIM_SELECTOR": "s1"}, cwd=tmp_path)


def test_secret_key_required_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OUTREACH_SECRET_KEY is not set"):
        Settings.load(env={}, cwd=tmp_path).require_secret_key("serve")
