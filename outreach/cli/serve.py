"""`outreach serve`: recipients' pages: unsubscribe, preferences, tracking."""

from __future__ import annotations

import sys

import click

from outreach.cli.app import App, console, pass_app
from outreach.errors import UserError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    "-w",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn worker processes.",
)
@pass_app
def serve(app: App, host: str, port: int, workers: int) -> None:
    """Serve recipients' pages: unsubscribe, preferences, click and open tracking, the
    subscribe form (with campaigns/subscribe.yaml) and the public archive.

    Needs OUTREACH_SECRET_KEY (the same as the workers') and OUTREACH_BASE_URL set to the
    public address this is reached at. Runs gunicorn with outreach.gunicorn_conf, as the
    compose web service does: clients that send half a request cannot hold its workers, and
    tokens never reach its log. Put it behind your HTTPS proxy.

    \b
    Example:
      outreach serve --port 8000
      OUTREACH_BASE_URL=https://mail.citynet-ap.org outreach serve --host 0.0.0.0 --workers 4
    """
    import os

    from outreach.gunicorn_conf import command
    from outreach.web import create_app

    # Refuse here, with one line, what would otherwise stop every worker as it boots.
    app.database()
    create_app(app.settings)
    _check_port_free(host, port)
    console.print(f"serving {app.settings.base_url} on http://{host}:{port} ({workers} workers)")
    from outreach.subscriptions import CONFIG_PATH

    form = "on" if CONFIG_PATH.is_file() else "off until the file exists"
    console.print(
        f"subscribe form: {form}; {CONFIG_PATH} is read again within seconds of a change",
        soft_wrap=True,
    )
    sys.stdout.flush()
    # A fresh interpreter: gevent must patch the standard library before the app and the
    # database driver are imported, which the workers of `gunicorn outreach.wsgi:app` do.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", *command(host, port, workers)])


def _check_port_free(host: str, port: int) -> None:
    """gunicorn retries a taken address for seconds, a line each time; say it once."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another program uses it; "
                "stop it, or choose another --port"
            ) from None
