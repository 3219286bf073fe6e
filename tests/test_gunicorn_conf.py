"""What reaches gunicorn's logs: never a recipient's token, in any line or traceback."""

from __future__ import annotations

import logging
import sys

from outreach.gunicorn_conf import RedactTokens, redact

# The shape of a signed token: DELIVERY.SIGNATURE, or DELIVERY.URL.SIGNATURE for a click.
TOKEN = "42.aHR0cHM6Ly9jaXR5bmV0LWFwLm9yZy8.fg4A1Tof-L1N4wM4b9a4BTvLas0"


def test_every_recipient_link_loses_its_token() -> None:
    for prefix in ("u", "p", "c", "o", "v", "confirm"):
        line = f'127.0.0.1 - - "POST /{prefix}/{TOKEN}?lang=ko HTTP/1.1" 200'
        assert redact(line) == f'127.0.0.1 - - "POST /{prefix}/[token]?lang=ko HTTP/1.1" 200'
    assert redact(f"GET /o/{TOKEN}.gif") == "GET /o/[token]"
    # Other paths stay as they are.
    for path in ("/healthz", "/static/site.css", "/subscribe", "/archive/feed.xml"):
        assert redact(f"GET {path} HTTP/1.1") == f"GET {path} HTTP/1.1"


def test_a_logged_exception_carries_no_token() -> None:
    """As Flask logs a failed request: the path in the message, maybe in the error too."""
    try:
        raise ValueError(f"cannot handle /u/{TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "outreach.web",
            logging.ERROR,
            __file__,
            1,
            "Exception on %s [%s]",
            (f"/u/{TOKEN}", "POST"),
            sys.exc_info(),
        )
    assert RedactTokens().filter(record)
    text = logging.Formatter().format(record)
    assert TOKEN not in text
    assert "Exception on /u/[token] [POST]" in text and "cannot handle /u/[token]" in text
