"""One reading of failures for bounces and SMTP replies: only a missing or disabled address is
hard; refusals of our sending (5.7.x, spam, blocked IP) are policy and never suppress."""

from __future__ import annotations

import pytest

from outreach.config import parse_smtp_url
from outreach.failures import classify
from outreach.transport import PermanentFailure, SmtpTransport
from tests.smtp_server import start_server
from tests.test_transport import envelope

GMAIL_DMARC = (
    "550-5.7.26 Unauthenticated email from citynet-ap.org is not accepted due to domain's "
    "DMARC policy. Please contact the administrator of citynet-ap.org domain."
)
MICROSOFT_515 = (
    "550 5.7.515 Access denied, sending domain citynet-ap.org doesn't meet the required "
    "authentication level."
)


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        ("5.1.1", "user unknown", "hard"),
        ("5.1.10", "RESOLVER.ADR.RecipientNotFound", "hard"),
        ("5.2.1", "mailbox disabled", "hard"),
        ("5.0.0", "550 <kim@x.org>: Recipient address rejected: User unknown", "hard"),
        (None, "550 No such user here", "hard"),
        (None, "Sorry, no mailbox here by that name. (#5.1.1)", "hard"),
        ("5.7.26", GMAIL_DMARC, "policy"),
        ("5.7.515", MICROSOFT_515, "policy"),
        ("5.7.1", "Recipient address rejected: user unknown", "policy"),  # 5.7 wins
        ("5.0.0", "550 Message rejected as spam", "policy"),
        (None, "554 Service unavailable; Client host [192.0.2.1] blocked using Spamhaus", "policy"),
        ("5.0.0", "550 SPF check failed", "policy"),
        ("5.2.2", "mailbox full", "soft"),
        ("4.2.2", "mailbox full", "soft"),
        # A domain that does not exist is an address that does not exist (issue 21, 10).
        (
            None,
            "Host or domain name not found. Name service error for name=x.example "
            "type=A: Host not found",
            "hard",
        ),
        (None, "claird@starbase.neosoft.com ... unknown host", "hard"),
        ("5.4.4", "550 5.4.4 Unrouteable address: domain does not exist", "hard"),
        ("5.0.0", "DNS Error: Domain name not found", "hard"),
        (None, "Name service error for domain digicool.com: Host not found, try again", "other"),
        # Our own sender's domain refused is not about the recipient.
        (None, "550 <news@citynet-ap.org>: Sender address rejected: Domain not found", "other"),
        ("4.7.1", "greylisted, try again later", "soft"),
        ("5.0.0", "550 This account is over quota", "soft"),
        ("5.3.4", "message too big for system", "other"),
        ("5.1.8", "bad sender's system address", "other"),  # about our sender
        ("5.0.0", "550 Message looping", "other"),
        (None, "", "other"),
        # Names are not words: a spam filter's host or a "nospam" mailbox is no policy.
        ("5.0.0", "host mx.spamfilter.example.com said: 550 <nospam@x.org> user unknown", "hard"),
    ],
)
def test_classify(status: str | None, text: str, kind: str) -> None:
    assert classify(status, text) == kind


@pytest.mark.parametrize(
    ("code", "text", "hard", "policy"),
    [
        (550, "5.1.1 <gone@example.org>: Recipient address rejected: User unknown", True, False),
        (550, "No such user", True, False),
        (550, GMAIL_DMARC.split(" ", 1)[1], False, True),
        (550, MICROSOFT_515.split(" ", 1)[1], False, True),
        (554, "5.7.1 Service unavailable; Client host [192.0.2.25] blocked", False, True),
        (550, "5.7.1 Message rejected as spam; user unknown checks skipped", False, True),
        (552, "5.2.2 mailbox full", False, False),
    ],
)
def test_smtp_replies_read_the_same_way(code: int, text: str, hard: bool, policy: bool) -> None:
    """A real SMTP server refuses the recipient; the transport's failure says what it means."""
    server = start_server()
    try:
        server.handler.rule("kim@example.org", "reply", f"{code} {text}")
        smtp = SmtpTransport(parse_smtp_url(server.url))
        with pytest.raises(PermanentFailure) as failure:
            smtp.send(envelope("kim@example.org"), "c")
        smtp.close()
    finally:
        server.stop()
    assert failure.value.code == code
    assert (failure.value.hard_bounce, failure.value.policy) == (hard, policy)
