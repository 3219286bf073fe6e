"""TLS to PostgreSQL and to Redis, as docs/operations.md tells an operator to write the URLs
(issue 20, item 5): a PostgreSQL of the test's own that takes only TLS connections, and a
redis-server that listens only with TLS and wants a password, each with a certificate made
by openssl; the commands connect with the documented URL and say so in one line when the
URL is wrong."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.smtp_server import free_port, make_certificate

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
# A password that breaks a URL it is pasted into unencoded.
PASSWORD = "p@ss:w/rd"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


def _as_postgres(*args: str) -> None:
    # No pipes: the server pg_ctl starts would hold them open.
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture
def tls_postgres(certificate: tuple[Path, Path]) -> Iterator[int]:
    """A cluster that refuses connections without TLS; its port."""
    if not PG_BIN or os.geteuid() != 0:
        pytest.fail("needs root and PostgreSQL's server binaries (CI has both)")
    bin_dir = PG_BIN[-1]
    data = Path(tempfile.mkdtemp(prefix="outreach-tls-pg-"))
    shutil.chown(data, "postgres")
    cert, key = certificate
    port = free_port()
    _as_postgres(f"{bin_dir}/initdb", "-D", str(data / "db"), "--auth=trust", "-U", "postgres")
    for source in (cert, key):
        shutil.copy(source, data / "db" / source.name)
        shutil.chown(data / "db" / source.name, "postgres")
    (data / "db" / key.name).chmod(0o600)
    (data / "db" / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all outreach 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all 127.0.0.1/32 reject\n"
    )
    options = (
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c ssl=on "
        f"-c ssl_cert_file={cert.name} -c ssl_key_file={key.name} -c fsync=off "
        "-c password_encryption=scram-sha-256"
    )
    log = str(data / "server.log")
    _as_postgres(
        f"{bin_dir}/pg_ctl", "-D", str(data / "db"), "-o", options, "-l", log, "-w", "start"
    )
    psql = [f"{bin_dir}/psql", "-h", str(data), "-p", str(port), "-U", "postgres", "-c"]
    _as_postgres(*psql, f"CREATE ROLE outreach LOGIN PASSWORD '{PASSWORD}'")
    _as_postgres(*psql, "CREATE DATABASE outreach OWNER outreach")
    try:
        yield port
    finally:
        _as_postgres(f"{bin_dir}/pg_ctl", "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_postgresql_over_tls_with_the_documented_url(
    run_cli, tls_postgres: int, certificate
) -> None:  # type: ignore[no-untyped-def]
    cert, _ = certificate
    base = f"postgresql+psycopg://postgres@127.0.0.1:{tls_postgres}/postgres"
    verified = f"{base}?sslmode=verify-full&sslrootcert={cert}"
    assert run_cli("init", env={"OUTREACH_DATABASE_URL": verified}).exit_code == 0
    status = run_cli("db", "status", env={"OUTREACH_DATABASE_URL": verified})
    assert status.exit_code == 0 and "expects this schema" in status.output
    # The server takes nothing without TLS, and a certificate we do not trust is refused.
    for url, why in (
        (f"{base}?sslmode=disable", "no encryption"),
        (f"{base}?sslmode=verify-full", "certificate"),
    ):
        result = run_cli("db", "status", env={"OUTREACH_DATABASE_URL": url})
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "cannot reach the database" in result.output and why in result.output


def test_a_password_with_any_character_reaches_postgresql(
    run_cli, tls_postgres: int, certificate
) -> None:  # type: ignore[no-untyped-def]
    """The compose file hands the bundled database's password over as PGPASSWORD, outside
    the URL; a password inside a URL is percent-encoded (docs/operations.md)."""
    from urllib.parse import quote

    cert, _ = certificate
    where = f"127.0.0.1:{tls_postgres}/outreach?sslmode=verify-full&sslrootcert={cert}"
    bare = f"postgresql+psycopg://outreach@{where}"
    result = run_cli("init", env={"OUTREACH_DATABASE_URL": bare, "PGPASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    encoded = f"postgresql+psycopg://outreach:{quote(PASSWORD, safe='')}@{where}"
    assert run_cli("db", "status", env={"OUTREACH_DATABASE_URL": encoded}).exit_code == 0
    pasted = f"postgresql+psycopg://outreach:{PASSWORD}@{where}"
    wrong = run_cli("db", "status", env={"OUTREACH_DATABASE_URL": pasted})
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output
    assert PASSWORD not in wrong.output


@pytest.fixture
def tls_redis(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[int]:
    """A redis-server that listens only with TLS and wants the password `s3cret-queue`."""
    cert, key = certificate
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert),
            "--tls-auth-clients", "no",
            "--requirepass", "s3cret-queue",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["redis-cli", "--tls", "--cacert", str(cert), "-p", str(port), "-a", "s3cret-queue",
             "--no-auth-warning", "ping"],
            capture_output=True, text=True,
        )  # fmt: skip
        if probe.stdout.strip() == "PONG":
            break
        time.sleep(0.1)
    try:
        yield port
    finally:
        server.kill()
        server.wait(timeout=10)


def test_redis_over_tls_with_a_password_and_the_documented_url(
    run_cli, tls_redis: int, certificate
) -> None:  # type: ignore[no-untyped-def]
    cert, _ = certificate
    assert run_cli("init").exit_code == 0
    good = f"rediss://:s3cret-queue@127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert}"
    result = run_cli("health", env={"OUTREACH_QUEUE_URL": good})
    assert result.exit_code == 0 and result.output == "", result.output
    for url in (
        f"rediss://:wrong@127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert}",  # the password
        f"rediss://:s3cret-queue@127.0.0.1:{tls_redis}/0",  # a certificate we do not trust
        f"redis://:s3cret-queue@127.0.0.1:{tls_redis}/0",  # no TLS
    ):
        result = run_cli("health", env={"OUTREACH_QUEUE_URL": url})
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert lines[0].startswith(
            "queue: cannot reach the queue rediss://"
            if "rediss" in url
            else "queue: cannot reach the queue redis://"
        )
        assert "s3cret-queue" not in lines[0]  # the password is masked
