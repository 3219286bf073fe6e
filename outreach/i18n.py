"""Every word a recipient reads, in gettext catalogs: `translations/LANG/LC_MESSAGES/messages.po`.

The message ids are the English source text, marked with `_()` in Python and `{% trans %}` in
templates (pages under `web_templates/`, mails under `mail_templates/`). A catalog is read
straight from its `.po` file (compiled in memory on first use), so adding a language is adding
one `.po` file: nothing to build, no code to change. A message missing from a catalog falls
back to the English text; the test-suite fails before that can ship for ko, en and zh-Hans.

A catalog's folder is named by its BCP 47 tag (`zh-Hans`, as pages write it in `lang=`).
Chinese is two written languages: Simplified (`zh-Hans`: mainland China, Singapore, Malaysia)
and Traditional (`zh-Hant`: Taiwan, Hong Kong, Macao). `zh`, `zh-CN`, `zh-SG` and `zh-Hans-…`
are Simplified readers (as CLDR's likely subtags have it); `zh-TW`, `zh-HK`, `zh-MO` and
`zh-Hant-…` are never given Simplified text in its place — without a `zh-Hant` catalog they get
the next language they accept, else English.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import pass_context
from jinja2.runtime import Context

CATALOGS = Path(__file__).parent / "translations"
DOMAIN = "messages"
# The language of a page whose reader we cannot know (a forged link) comes first.
DEFAULT = "en"
_lock = threading.Lock()


def _catalog_path(language: str) -> Path:
    return CATALOGS / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=1)
def languages() -> tuple[str, ...]:
    """The languages that have a catalog: Korean first (CityNet's own), then by code."""
    found = sorted(p.parent.parent.name for p in CATALOGS.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return tuple(sorted(found, key=lambda code: (code != "ko", code)))


def native_name(language: str) -> str:
    """A language's name in that language, for language menus: 한국어, English, 日本語."""
    try:
        locale = Locale.parse(language.replace("-", "_"))
        name = locale.get_display_name(locale) or language
    except (UnknownLocaleError, ValueError):
        return language
    return name[:1].upper() + name[1:]


def menu() -> list[tuple[str, str]]:
    return [(code, native_name(code)) for code in languages()]


@lru_cache(maxsize=64)
def translations(language: str) -> Translations:
    """The catalog of a language (English text when there is none), compiled in memory."""
    path = _catalog_path(language)
    if language not in languages():
        return Translations()  # gettext returns the English message ids
    with _lock, path.open("rb") as po:
        catalog = read_po(po, locale=language.replace("-", "_"), domain=DOMAIN)
        buffer = io.BytesIO()
        write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


# Regions whose Chinese is written in Traditional characters.
_TRADITIONAL_REGIONS = frozenset({"tw", "hk", "mo"})


def chinese_script(language: str) -> str | None:
    """`zh-Hans` or `zh-Hant` for a Chinese tag (`zh-CN` → `zh-Hans`, `zh-TW` → `zh-Hant`,
    `zh` → `zh-Hans`), None for any other language."""
    parts = language.replace("_", "-").lower().split("-")
    if parts[0] != "zh":
        return None
    if "hant" in parts or (_TRADITIONAL_REGIONS & set(parts) and "hans" not in parts):
        return "zh-Hant"
    return "zh-Hans"


def supported(language: str | None) -> str | None:
    """A catalog language for a BCP 47 tag (`ko-KR` → `ko`, `zh-CN` → `zh-Hans`), or None."""
    if not language:
        return None
    if language in languages():
        return language
    script = chinese_script(language)
    if script:
        return script if script in languages() else None
    primary = language.split("-")[0].lower()
    return primary if primary in languages() else None


def best_accepted(accepted: Iterable[tuple[str, float]]) -> str | None:
    """The catalog language for an Accept-Language list (best quality first). A browser that
    names Traditional Chinese first is not served Simplified for a later bare `zh`."""
    traditional = False
    for tag, quality in accepted:
        if quality <= 0:
            continue
        script = chinese_script(tag)
        if script == "zh-Hant":
            traditional = True
        if traditional and script and tag.lower() == "zh":
            continue
        found = supported(tag)
        if found:
            return found
    return None


def N_(message: str) -> str:
    """Marks a message for the catalogs where it is defined; it is translated where used."""
    return message


def translator(language: str) -> Callable[[str], str]:
    """`_` for one language: `_ = translator("ko"); _("Unsubscribe")`."""
    return translations(language).gettext


@pass_context
def _context_gettext(context: Context, message: str) -> str:
    return translations(context.get("lang") or DEFAULT).gettext(message)


@pass_context
def _context_ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return translations(context.get("lang") or DEFAULT).ngettext(singular, plural, n)


def install(environment: Any) -> None:
    """Jinja's i18n extension on an environment whose templates get `lang` when rendered: one
    environment serves every language (Flask's, for the pages)."""
    environment.add_extension("jinja2.ext.i18n")
    environment.install_gettext_callables(_context_gettext, _context_ngettext, newstyle=True)
