"""Every word a recipient reads is in the message catalogs, and ko, en and zh-Hans are complete.

The messages are extracted from the code and templates exactly as `pybabel extract -F
babel.cfg` does; a message missing from a catalog, untranslated, fuzzy, with different
placeholders, or left over from text that is gone fails here (and so in CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from outreach import i18n

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("ko", "en", "zh-Hans")


def extracted() -> set[str]:
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


@pytest.fixture(scope="module")
def messages() -> set[str]:
    found = extracted()
    assert len(found) > 60, "the extraction found too little: is babel.cfg right?"
    return found


@pytest.mark.parametrize("language", REQUIRED)
def test_catalog_is_complete(language: str, messages: set[str]) -> None:
    path = i18n.CATALOGS / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=language.replace("-", "_"))
    entries = {m.id: m for m in catalog if m.id}
    missing = sorted(messages - set(entries))
    assert not missing, f"{path}: no entry for {missing[:5]} (run pybabel update, see README)"
    untranslated = sorted(k for k, m in entries.items() if not m.string)
    assert not untranslated, f"{path}: untranslated {untranslated[:5]}"
    fuzzy = sorted(k for k, m in entries.items() if m.fuzzy)
    assert not fuzzy, f"{path}: fuzzy entries {fuzzy[:5]}; check them and remove the flag"
    obsolete = sorted(set(entries) - messages)
    assert not obsolete, f"{path}: entries no text uses any more: {obsolete[:5]}"
    problems = [(m.id, errors) for m, errors in catalog.check() if errors]
    assert not problems, f"{path}: placeholders differ: {problems[:3]}"


def test_the_template_for_new_languages_is_current(messages: set[str]) -> None:
    with (i18n.CATALOGS / "messages.pot").open("rb") as pot:
        template = {m.id for m in read_po(pot) if m.id}
    assert template == messages, "outreach/translations/messages.pot is stale: pybabel extract"


def test_korean_and_english_are_offered_korean_first() -> None:
    assert i18n.languages()[:2] == ("ko", "en")
    assert i18n.menu()[:2] == [("ko", "한국어"), ("en", "English")]
    assert i18n.translator("ko")("Unsubscribe") == "수신거부"
    assert i18n.supported("ko-KR") == "ko" and i18n.supported("xx") is None


def test_a_language_is_one_po_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "translations"
    shutil.copytree(i18n.CATALOGS, folder)
    ja = folder / "ja" / "LC_MESSAGES" / "messages.po"
    ja.parent.mkdir(parents=True)
    ja.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Unsubscribe"\nmsgstr "配信停止"\n\n'
        '#, fuzzy\nmsgid "Subscribe"\nmsgstr "購読する（未確認）"\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(i18n, "CATALOGS", folder)
    i18n.languages.cache_clear()
    i18n.translations.cache_clear()
    try:
        assert i18n.languages() == ("ko", "en", "ja", "zh-Hans")
        assert ("ja", "日本語") in i18n.menu()
        _ = i18n.translator("ja")
        assert _("Unsubscribe") == "配信停止"
        assert _("Subscribe") == "Subscribe"  # fuzzy: not used; English until checked
        assert _("Save language") == "Save language"  # missing: English
    finally:
        i18n.languages.cache_clear()
        i18n.translations.cache_clear()


def test_simplified_chinese_is_offered_under_its_script_tag() -> None:
    assert ("zh-Hans", "中文 (简体)") in i18n.menu()
    assert i18n.translator("zh-Hans")("Unsubscribe") == "退订"
    for tag in ("zh", "zh-Hans", "zh-hans", "zh-CN", "zh-SG", "zh-Hans-CN", "zh_CN"):
        assert i18n.supported(tag) == "zh-Hans", tag


def test_traditional_chinese_readers_are_not_given_simplified() -> None:
    for tag in ("zh-TW", "zh-HK", "zh-MO", "zh-Hant", "zh-Hant-TW"):
        assert i18n.supported(tag) is None, tag
    assert i18n.best_accepted([("zh-TW", 1), ("zh", 0.9), ("en", 0.5)]) == "en"
    assert i18n.best_accepted([("zh-CN", 1), ("en", 0.5)]) == "zh-Hans"
    assert i18n.best_accepted([("fr", 1), ("zh", 0.8)]) == "zh-Hans"
    assert i18n.best_accepted([("fr", 1)]) is None


def test_campaign_variants_follow_the_script_of_a_contacts_chinese() -> None:
    from outreach.compose import resolve_language

    variants = {"en", "ko", "zh-Hans"}
    assert resolve_language("zh", variants, "en") == "zh-Hans"
    assert resolve_language("zh-CN", variants, "en") == "zh-Hans"
    assert resolve_language("zh-TW", variants, "en") == "en"
    assert resolve_language("zh-Hant", {"en", "zh-Hant"}, "en") == "zh-Hant"
    assert resolve_language("zh-CN", {"en", "zh"}, "en") == "zh"
