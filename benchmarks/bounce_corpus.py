"""How well real-world bounces are read, once their addresses have been mailed.

The corpus is a folder of bounce messages with an expected.json that lists, per file, the
failing addresses and whether the failure is permanent or temporary. This script makes a
scratch database with a contact for every expected address (and every address the files
name), then plays three campaigns in a row: each campaign sends a delivery to every address,
and each corpus message comes back once for it (made a message of its own by a header that
names the campaign, as the returns of different campaigns are). Two setups:

- with a bounce domain (the message arrives at the VERP address of the delivery it is about,
  as `bounces receive` gets it): the figures of record;
- without one (at the From mailbox): the delivery's Message-ID is the one the message quotes,
  when it quotes one; a message that quotes none is named by its address alone, recorded and
  listed for staff but never suppressing on its own.

It prints, for the first campaign as `outreach bounces ingest` reads it:

- found: expected addresses recorded as a failure of their delivery, next to flufl.bounce
  alone on the same files in the same run (the baseline);
- kinds right: permanent failures read as permanent (hard, policy or other) and temporary
  ones as soft, with the breakdown;

and for each setup the share of permanent failures suppressed after each campaign, and the
temporary failures suppressed (must be 0 after one and after two campaigns).

    python benchmarks/bounce_corpus.py CORPUS_DIR [--campaigns 3]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def normalised(address: str) -> str | None:
    from outreach.fields import normalise_email

    try:
        return normalise_email(address)
    except ValueError:
        return None


DOMAIN = "bounce.citynet-ap.org"


def populate(url: str, addresses: set[str]) -> dict[str, int]:
    """A contact for each address: {address: contact id}."""
    from outreach.db import upgrade, writer_sessionmaker
    from outreach.models import Contact

    upgrade(url)
    with writer_sessionmaker(url)() as session:
        contacts = {}
        for address in sorted(addresses):
            contact = Contact(email=address, attributes={})
            session.add(contact)
            session.flush()
            contacts[address] = contact.id
        session.commit()
    return contacts


def send_campaign(
    url: str, n: int, contacts: dict[str, int], message_ids: dict[str, str]
) -> dict[str, int]:
    """Campaign n, sent to every contact (n days ago counted back from the last); the
    deliveries' Message-IDs are `message_ids`' where given. {address: delivery id}."""
    from outreach.db import writer_sessionmaker
    from outreach.models import Campaign, Delivery, utcnow

    sent_at = utcnow() - timedelta(days=10 - n)
    with writer_sessionmaker(url)() as session:
        campaign = Campaign(
            name=f"corpus{n}",
            state="done",
            definition={"audience": {"include": []}},
            expressions=[],
        )
        session.add(campaign)
        session.flush()
        deliveries = {}
        for address, contact_id in contacts.items():
            delivery = Delivery(
                campaign_id=campaign.id,
                contact_id=contact_id,
                state="sent",
                attempts=1,
                message_id=message_ids.get(address)
                or f"<{contact_id}.{n}.{secrets.token_hex(8)}@citynet-ap.org>",
                sent_at=sent_at,
            )
            session.add(delivery)
            session.flush()
            deliveries[address] = delivery.id
        session.commit()
    return deliveries


def flufl_alone(raw: bytes) -> dict[str, str]:
    """The baseline: flufl.bounce's own reading, address -> permanent/temporary."""
    import flufl.bounce

    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    try:
        temporary, permanent = flufl.bounce.all_failures(msg)
    except Exception:
        return {}
    found = {a.decode("ascii", "replace").lower(): "temporary" for a in temporary}
    found.update({a.decode("ascii", "replace").lower(): "permanent" for a in permanent})
    return found


def first_reading(
    url: str, expected: list[dict[str, Any]], raws: dict[str, bytes], contacts: dict[str, int]
) -> None:
    """Campaign 1 returned at the VERP addresses: what was found, and read as what."""
    from sqlalchemy import select

    from outreach.bounces import Ingester
    from outreach.db import writer_sessionmaker
    from outreach.models import Contact, Event
    from outreach.tokens import Tokens

    tokens = Tokens("corpus-" + secrets.token_urlsafe(16))
    deliveries = send_campaign(url, 1, contacts, {})
    total = sum(len(item["addresses"]) for item in expected)
    found = kinds_right = baseline_found = 0
    read_as: Counter[tuple[str, str]] = Counter()
    missed: list[str] = []
    read_soft: list[str] = []
    outcome: Counter[str] = Counter()
    started = time.perf_counter()
    with writer_sessionmaker(url)() as session:
        for item in expected:
            name = item["file"]
            baseline = flufl_alone(raws[name])
            for address in item["addresses"]:
                key = normalised(address) or address.lower()
                baseline_found += address.lower() in baseline
                last_event = session.scalar(select(Event.id).order_by(Event.id.desc())) or 0
                ingester = Ingester(session, tokens, DOMAIN, 3)
                delivery = deliveries.get(key)
                envelope = f"bounces+{tokens.sign('bounce', delivery or 0)}@{DOMAIN}"
                ingester.ingest(raws[name], name, envelope_to=envelope)
                session.commit()
                for label in ("hard", "soft", "policy", "other", "not_ours", "not_bounces"):
                    outcome[label] += getattr(ingester.report, label)
                got = session.scalar(
                    select(Event.data)
                    .join(Contact, Contact.id == Event.contact_id)
                    .where(Event.id > last_event, Event.kind == "bounce", Contact.email == key)
                )
                if got is None:
                    missed.append(f"{name} {address}")
                    continue
                got_kind = got.get("kind")
                if got_kind == "unreadable":  # a return at the VERP address naming no failure
                    missed.append(f"{name} {address}")
                    continue
                found += 1
                read_as[(item["kind"], got_kind)] += 1
                if (item["kind"] == "temporary") == (got_kind == "soft"):
                    kinds_right += 1
                elif item["kind"] == "permanent":
                    read_soft.append(name)
    elapsed = time.perf_counter() - started
    print(
        f"found: {found}/{total} = {found / total:.1%}; flufl.bounce alone, same files: "
        f"{baseline_found}/{total} = {baseline_found / total:.1%}; ratio "
        f"{found / max(baseline_found, 1):.2f}"
    )
    print(
        f"kinds right: {kinds_right}/{found} (permanent read as hard, policy or other; "
        "temporary as soft)"
    )
    for kind in ("permanent", "temporary"):
        parts = ", ".join(
            f"{n} {got}"
            for (k, got), n in sorted(read_as.items(), key=lambda x: -x[1])
            if k == kind
        )
        print(f"  {kind} read as: {parts}")
    if read_soft:
        print("  permanent read as soft: " + ", ".join(read_soft))
    print(
        f"ingested in {elapsed:.2f} s; outcomes: "
        + ", ".join(f"{n} {label}" for label, n in outcome.items())
    )
    if missed:
        print("missed: " + "; ".join(missed))


def campaigns_in_a_row(
    url: str,
    expected: list[dict[str, Any]],
    raws: dict[str, bytes],
    contacts: dict[str, int],
    campaigns: int,
    verp: bool,
) -> None:
    """Every message returned for `campaigns` campaigns in a row; what is suppressed after
    each."""
    from sqlalchemy import select

    from outreach.bounce_parser import parse
    from outreach.bounces import Ingester
    from outreach.db import writer_sessionmaker
    from outreach.models import Suppression
    from outreach.tokens import Tokens

    tokens = Tokens("corpus-" + secrets.token_urlsafe(16))
    permanent = {
        normalised(a) or a for i in expected if i["kind"] == "permanent" for a in i["addresses"]
    }
    temporary = {
        normalised(a) or a for i in expected if i["kind"] == "temporary" for a in i["addresses"]
    }
    quoted = {item["file"]: parse(raws[item["file"]]).message_id for item in expected}
    setup = "with a bounce domain (VERP)" if verp else "without a bounce domain"
    by_message_id = sum(1 for item in expected if quoted[item["file"]] for _ in item["addresses"])
    for n in range(1, campaigns + 1):
        # Each return is a message of its own, and, as each of our messages has one
        # recipient, a report that lists several addresses is one return per address. Without
        # a bounce domain the delivery carries the Message-ID its return quotes, made its own.
        returns: list[tuple[str, str, bytes]] = []  # (file, address, message)
        ids: dict[str, str] = {}
        for index, item in enumerate(expected):
            for k, address in enumerate(item["addresses"]):
                key = normalised(address) or address
                raw = f"X-Corpus-Campaign: {n}\n".encode() + raws[item["file"]]
                mid = quoted[item["file"]]
                if mid and not verp:
                    mine = mid.replace("@", f".f{index}.{k}.c{n}@", 1)
                    raw = raw.replace(mid.encode(), mine.encode())
                    ids[key] = mine
                returns.append((item["file"], key, raw))
        deliveries = send_campaign(url, n, contacts, ids)
        unconfirmed = 0
        with writer_sessionmaker(url)() as session:
            for name, key, raw in returns:
                ingester = Ingester(session, tokens, DOMAIN if verp else None, 3)
                envelope = None
                if verp:
                    envelope = f"bounces+{tokens.sign('bounce', deliveries.get(key, 0))}@{DOMAIN}"
                ingester.ingest(raw, name, envelope_to=envelope)
                session.commit()
                unconfirmed += len(ingester.report.unconfirmed)
            now = set(session.scalars(select(Suppression.email)))
        share = len(permanent & now) / len(permanent)
        extra = (
            ""
            if verp
            else (
                f"; {by_message_id} of the expected addresses' messages quote a Message-ID, "
                f"{unconfirmed} failures named by address only (listed, not suppressed alone)"
            )
        )
        print(
            f"  {setup}, after campaign {n}: {len(permanent & now)}/{len(permanent)} = "
            f"{share:.1%} of permanent failures suppressed; temporary suppressed: "
            f"{len(temporary & now)}/{len(temporary)}{extra}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="folder with the messages and expected.json")
    parser.add_argument("--campaigns", type=int, default=3)
    args = parser.parse_args()
    import logging

    from outreach.bounce_parser import parse

    logging.getLogger("flufl.bounce").disabled = True  # the baseline's tracebacks
    expected = json.loads((args.corpus / "expected.json").read_text(encoding="utf-8"))
    raws = {item["file"]: (args.corpus / item["file"]).read_bytes() for item in expected}
    addresses: set[str] = set()
    for item in expected:
        addresses.update(filter(None, map(normalised, item["addresses"])))
        parsed = parse(raws[item["file"]])
        addresses.update(filter(None, (normalised(f.address or "") for f in parsed.failures)))
    total = sum(len(item["addresses"]) for item in expected)
    by_kind = Counter(item["kind"] for item in expected for _ in item["addresses"])
    print(
        f"corpus: {len(raws)} files, {total} expected failing addresses "
        f"({by_kind['permanent']} permanent, {by_kind['temporary']} temporary); "
        f"{len(addresses)} addresses mailed in each scratch database"
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/first.db"
        first_reading(url, expected, raws, populate(url, addresses))
        for verp in (True, False):
            url = f"sqlite:///{tmp}/{'verp' if verp else 'plain'}.db"
            campaigns_in_a_row(url, expected, raws, populate(url, addresses), args.campaigns, verp)


if __name__ == "__main__":
    main()
