"""`outreach demo`: the whole path on a fresh machine, in a folder of its own, into an outbox.

The example contacts, campaigns and templates are package data (`outreach/examples/`), so the
demo works from an installed package in any folder, not only in a source checkout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from outreach import secretkey
from outreach.config import Settings
from outreach.errors import UserError

EXAMPLES = Path(__file__).resolve().parent / "examples"
CAMPAIGN = "2026-12-newsletter"
POSTAL = (
    "CityNet Secretariat, Seoul Global Center 10F, 38 Jong-ro, Jongno-gu, Seoul 03188, "
    "Republic of Korea"
)
DEMO_TOML = f"""# Written by `outreach demo`. Everything stays in this folder; mail goes to outbox/.
postal_address = "{POSTAL}"
from = "CityNet Secretariat <news@citynet-ap.org>"
rate = "0"
"""


def run_demo(directory: Path, say: Callable[[str], None], timeout: float = 120) -> Settings:
    from outreach.campaigns import find_campaigns
    from outreach.contacts import import_csv
    from outreach.db import upgrade, writer_sessionmaker
    from outreach.errors import FileErrors
    from outreach.lifecycle import send_campaign, wait_until_done
    from outreach.tasks import enqueuer
    from outreach.validate import validate_campaign

    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise UserError(f"{directory} is not empty; the demo wants a folder of its own (use --dir)")
    directory.mkdir(parents=True, exist_ok=True)
    for folder in ("campaigns", "templates"):
        shutil.copytree(EXAMPLES / folder, directory / folder)
    (directory / "examples").mkdir()
    shutil.copy(EXAMPLES / "contacts.csv", directory / "examples" / "contacts.csv")
    (directory / "outreach.toml").write_text(DEMO_TOML, encoding="utf-8")
    secretkey.store(directory / "outreach.toml")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTREACH_") or k.startswith("OUTREACH_TEST_")
    }
    settings = Settings.load(env=env, cwd=directory)
    say(f"1. database {settings.database_url}")
    upgrade(settings.database_url)
    session_factory = writer_sessionmaker(settings.database_url)
    with session_factory() as session:
        result = import_csv(session, directory / "examples" / "contacts.csv")
    say(f"2. imported {result.created} example contacts")
    with session_factory() as session:
        for path in find_campaigns(directory / "campaigns"):
            report = validate_campaign(path, settings, session)
            if not report.ok:
                raise FileErrors(report.errors)
            say(f"3. validated {path.relative_to(directory)}: {report.audience_size} recipients")
        newsletter = directory / "campaigns" / f"{CAMPAIGN}.yaml"
        sent = send_campaign(newsletter, settings, session, enqueuer(settings))
    say(f"4. queued {sent.added} deliveries of {sent.campaign}; starting a worker")
    worker = subprocess.Popen(
        [sys.executable, "-m", "outreach", "worker", "--workers", "2"],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "worker.log").open("wb"),
    )
    try:
        status = wait_until_done(session_factory, sent.campaign, timeout)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    say(f"5. worker stopped; campaign {status.name} is {status.state}")
    if status.state != "done":
        raise UserError(
            f"the demo campaign did not finish in {timeout:.0f} s (see {directory / 'worker.log'})"
        )
    return settings


def outreach_command() -> str:
    """How to run this same `outreach` from a shell, as the user's shell will find it: plain
    `outreach` when that is what PATH gives, else its full path (a virtualenv that is not
    activated), else through this Python."""
    script = Path(sys.argv[0]).absolute()
    if script.name == "outreach" and script.is_file():
        found = shutil.which("outreach")
        if found and Path(found).absolute() == script:
            return "outreach"
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m outreach"


def next_commands(directory: Path) -> list[str]:
    """What to try next, as commands that work when pasted into a shell as they are."""
    outreach = outreach_command()
    return [
        f"cd {shlex.quote(str(directory.resolve()))}",
        f"{outreach} campaigns status {CAMPAIGN}",
        f"{outreach} campaigns report {CAMPAIGN}",
        f"{outreach} campaigns preview campaigns/{CAMPAIGN}.yaml "
        "--contact mayor.office@suwon.example.org",
    ]
