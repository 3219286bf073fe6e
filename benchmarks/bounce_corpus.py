"""How well real-world bounces are read, once their addresses have been mailed.

The corpus is a folder of bounce messages with an expected.json that lists, per file, the
failing addresses and whether the failure is permanent or temporary. This script makes a
scratch database with a contact and a sent delivery for every expected address (and every
address the files name), ingests each file exactly as `outreach bounces ingest` does, and
prints:

- found: expected addresses recorded as a failure of their delivery, next to flufl.bounce
  alone on the same files in the same run (the baseline);
- kinds right: permanent failures read as permanent (hard, policy or other) and temporary
  ones as soft, with the breakdown (only "hard" suppresses at once);
- temporary failures that were suppressed (must be 0).

    python benchmarks/bounce_corpus.py CORPUS_DIR
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


def populate(url: str, addresses: set[str]) -> None:
    """A contact and one delivery sent yesterday for each address."""
    from outreach.db import upgrade, writer_sessionmaker
    from outreach.models import Campaign, Contact, Delivery, utcnow

    upgrade(url)
    now = utcnow()
    with writer_sessionmaker(url)() as session:
        campaign = Campaign(
            name="corpus", state="done", definition={"audience": {"include": []}}, expressions=[]
        )
        session.add(campaign)
        session.flush()
        for address in sorted(addresses):
            contact = Contact(email=address, attributes={})
            session.add(contact)
            session.flush()
            session.add(
                Delivery(
                    campaign_id=campaign.id,
                    contact_id=contact.id,
                    state="sent",
                    attempts=1,
                    message_id=f"<{contact.id}.{secrets.token_hex(8)}@citynet-ap.org>",
                    sent_at=now - timedelta(days=1),
                )
            )
        session.commit()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="folder with the messages and expected.json")
    args = parser.parse_args()
    import logging

    from sqlalchemy import select

    from outreach.bounce_parser import parse
    from outreach.bounces import Ingester
    from outreach.db import writer_sessionmaker
    from outreach.models import Contact, Event, Suppression
    from outreach.tokens import Tokens

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

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/corpus.db"
        populate(url, addresses)
        found = kinds_right = temporary_suppressed = baseline_found = 0
        read_as: Counter[tuple[str, str]] = Counter()
        missed: list[str] = []
        read_soft: list[str] = []
        outcome: Counter[str] = Counter()
        started = time.perf_counter()
        files: dict[str, list[dict[str, Any]]] = {}
        for item in expected:  # a file may be listed more than once (two detectors' views)
            files.setdefault(item["file"], []).append(item)
        with writer_sessionmaker(url)() as session:
            for name, items in files.items():
                last_event = session.scalar(select(Event.id).order_by(Event.id.desc())) or 0
                before = set(session.scalars(select(Suppression.email)))
                ingester = Ingester(session, Tokens("corpus"), None, 3)
                ingester.ingest(raws[name], name)
                session.commit()
                report = ingester.report
                for label in ("hard", "soft", "policy", "other", "not_ours", "not_bounces"):
                    outcome[label] += getattr(report, label)
                recorded = {
                    email: (data or {}).get("kind")
                    for email, data in session.execute(
                        select(Contact.email, Event.data)
                        .join(Contact, Contact.id == Event.contact_id)
                        .where(Event.id > last_event, Event.kind == "bounce")
                    )
                }
                now_suppressed = set(session.scalars(select(Suppression.email))) - before
                baseline = flufl_alone(raws[name])
                listed = [(a, i["kind"]) for i in items for a in i["addresses"]]
                for address, kind in listed:
                    key = normalised(address) or address.lower()
                    baseline_found += address.lower() in baseline
                    got = recorded.get(key)
                    if got is None:
                        missed.append(f"{name} {address}")
                        continue
                    found += 1
                    read_as[(kind, got)] += 1
                    if (kind == "temporary") == (got == "soft"):
                        kinds_right += 1
                    elif kind == "permanent":
                        read_soft.append(name)
                    if kind == "temporary" and key in now_suppressed:
                        temporary_suppressed += 1
        elapsed = time.perf_counter() - started

    print(
        f"corpus: {len(raws)} files, {total} expected failing addresses "
        f"({by_kind['permanent']} permanent, {by_kind['temporary']} temporary); "
        f"{len(addresses)} addresses mailed in the scratch database"
    )
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
    print("  (only hard suppresses at once; a full mailbox is soft on purpose: it exists)")
    if read_soft:
        print("  permanent read as soft: " + ", ".join(read_soft))
    print(f"temporary failures suppressed: {temporary_suppressed}")
    print(
        f"ingested in {elapsed:.2f} s; outcomes: "
        + ", ".join(f"{n} {label}" for label, n in outcome.items())
    )
    if missed:
        print("missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
