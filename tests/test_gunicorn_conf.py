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


def test_a_percent_encoded_link_loses_its_token_too() -> None:
    """gunicorn decodes the path before routing, so /%75/TOKEN is served as /u/TOKEN: the
    log is redacted on the decoded path."""
    for path in (
        f"/%75/{TOKEN}",
        f"/%70/{TOKEN}",
        f"/u%2F{TOKEN}",
        f"/u%2f{TOKEN}",
        f"%2Fu%2F{TOKEN}",
        f"/%63%6f%6e%66%69%72%6d/{TOKEN}",
        f"//u/{TOKEN}",
        f"/%75/%34%32.{TOKEN[3:]}",  # the token itself encoded
    ):
        line = f'127.0.0.1 - - "POST {path}?lang=ko HTTP/1.1" 200 "Mozilla/5.0 %20"'
        cleaned = redact(line)
        assert TOKEN not in cleaned and TOKEN[3:] not in cleaned, (path, cleaned)
        assert "[token]?lang=ko HTTP/1.1" in cleaned and '"Mozilla/5.0 %20"' in cleaned
    # Encoded characters that mean something else stay encoded: no line breaks in the log.
    assert redact(f"GET /%75/{TOKEN}%0a%0dX: y HTTP/1.1") == "GET /u/[token] y HTTP/1.1"
    assert redact("GET /subscribe?x=%75 HTTP/1.1") == "GET /subscribe?x=%75 HTTP/1.1"


def test_every_spelling_of_a_token_path_loses_its_token() -> None:
    """Werkzeug merges slashes (/u//TOKEN is /u/TOKEN) and a person may type /U/: whether
    the app serves, redirects or refuses such a path, the log must not carry the token."""
    for path in (
        f"/u//{TOKEN}",
        f"/u///{TOKEN}",
        f"//u//{TOKEN}",
        f"/U/{TOKEN}",
        f"/Confirm/{TOKEN}",
        f"/V//{TOKEN}",
        f"/u\\{TOKEN}",
        f"/%55/{TOKEN}",
        f"/u/%2F{TOKEN}",
        f"/x/../u/{TOKEN}",
        f"/unsubscribe/{TOKEN}",  # no such door, but the token is still a key to one
        f"/u/{TOKEN}/",
    ):
        line = f'127.0.0.1 - - "GET {path}?lang=ko HTTP/1.1" 404'
        cleaned = redact(line)
        assert TOKEN not in cleaned and TOKEN[3:] not in cleaned, (path, cleaned)
        assert "[token]" in cleaned and cleaned.endswith('?lang=ko HTTP/1.1" 404'), cleaned
