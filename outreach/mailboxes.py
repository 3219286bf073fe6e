"""One mailbox, however its address is spelt: the rule every per-mailbox check of the subscribe
form uses (its daily limit, its suppression checks) and `contacts forget`.

Addresses are stored normalised (`fields.normalise_email`: trimmed, lower-cased, the domain
in its ASCII form), so case is one mailbox already. On top of that:

- a `+tag` is dropped everywhere: Gmail, Outlook.com, iCloud, Fastmail, Proton, Yahoo and
  most servers deliver `name+anything@` to `name@`, and where a server does not, folding
  only makes a limit stricter for that one name;
- Gmail ignores dots in the local part, and googlemail.com is gmail.com (Google's help:
  "dots don't matter in Gmail addresses"; it does not hold for Google Workspace domains,
  whose dots do matter, so only these two domains are folded);
- Proton ignores dots, hyphens and underscores in the names of its own domains, and a name
  is one account across protonmail.com, protonmail.ch, proton.me and pm.me (its short form).

Not folded, because there the spellings are different people's mailboxes: dots at
Outlook/Hotmail, Yahoo, iCloud, Naver, Daum and everyone's own servers; Yahoo's `name-word`
disposable addresses (made one by one by their owner); Fastmail's `anything@name.fastmail.com`
(rare, and its domain names the person anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, func, or_
from sqlalchemy.orm import InstrumentedAttribute


@dataclass(frozen=True)
class Provider:
    domains: tuple[str, ...]  # the first is the one a mailbox is written with
    ignored: str  # characters of the name that make no other mailbox


PROVIDERS = (
    Provider(("gmail.com", "googlemail.com"), "."),
    Provider(("protonmail.com", "protonmail.ch", "proton.me", "pm.me"), ".-_"),
)
_BY_DOMAIN = {domain: provider for provider in PROVIDERS for domain in provider.domains}


def _strip(text: str, characters: str) -> str:
    for character in characters:
        text = text.replace(character, "")
    return text


def mailbox(email: str) -> str:
    """The mailbox a normalised address reaches: `victim@gmail.com` for
    `v.ictim+news@googlemail.com`."""
    local, _, domain = email.rpartition("@")
    local = local.partition("+")[0]
    provider = _BY_DOMAIN.get(domain)
    if provider is not None:
        local, domain = _strip(local, provider.ignored), provider.domains[0]
    return f"{local}@{domain}"


def domain_of(email: str) -> str:
    """The domain a mailbox is at (googlemail.com is gmail.com)."""
    return mailbox(email).rpartition("@")[2]


def same_mailbox(column: InstrumentedAttribute[str], email: str) -> ColumnElement[bool]:
    """Rows whose address (in `column`, stored normalised) reaches the mailbox of `email`:
    itself, with any +tag, and the spellings its provider ignores. Plain SQL (replace, LIKE)
    on SQLite and PostgreSQL alike."""
    local, _, domain = mailbox(email).rpartition("@")
    if not local:
        return false()
    provider = _BY_DOMAIN.get(domain)
    if provider is None:
        tagged = and_(
            column.startswith(f"{local}+", autoescape=True),
            column.endswith(f"@{domain}", autoescape=True),
        )
        return or_(column == f"{local}@{domain}", tagged)
    # The ignored characters taken out of the whole stored address (its domain too: the
    # domains are compared in that form, and only the provider's own are considered).
    squeezed: ColumnElement[str] = column  # type: ignore[assignment]
    for character in provider.ignored:
        squeezed = func.replace(squeezed, character, "")
    spellings = []
    for own in provider.domains:
        plain = _strip(own, provider.ignored)
        spellings.append(
            and_(
                column.endswith(f"@{own}", autoescape=True),
                or_(
                    squeezed == f"{local}@{plain}",
                    and_(
                        squeezed.startswith(f"{local}+", autoescape=True),
                        squeezed.endswith(f"@{plain}", autoescape=True),
                    ),
                ),
            )
        )
    return or_(*spellings)
