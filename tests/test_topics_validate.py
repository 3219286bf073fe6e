"""Topics as staff write them: campaigns/topics.yaml and a campaign's `topic:`, checked by
`campaigns validate` (and so by `send`) with the file, the line and what to write."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach.errors import FileErrors
from outreach.models import Campaign, Delivery
from tests.conftest import write
from tests.project import CAMPAIGN, make_project
from tests.sending_helpers import project_with, send, settings_for
from tests.topic_helpers import TOPICS, with_topics

ENV = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}


def errors_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_an_unknown_topic_is_located_with_the_names_that_exist(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, CAMPAIGN + "topic: evnts\n")
    with_topics(tmp_path)
    result = run_cli("campaigns", "validate", "campaigns/news.yaml", env=ENV)
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = CAMPAIGN.count("\n") + 1
    assert errors_of(result.output)[0] == (
        f"error: campaigns/news.yaml:{line}: unknown topic 'evnts' (did you mean 'events'?); "
        "the topics in campaigns/topics.yaml: newsletter, events"
    )


def test_a_topic_without_topics_yaml_says_to_create_it(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, CAMPAIGN + "topic: events\n")
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 1
    assert "unknown topic 'events': there is no campaigns/topics.yaml; create it" in result.output


def test_a_topic_that_is_not_a_name_is_a_schema_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, CAMPAIGN + "topic: [events]\n")
    with_topics(tmp_path)
    result = run_cli("campaigns", "validate", "campaigns/news.yaml", env=ENV)
    assert result.exit_code == 1
    assert "topic: write the name of a topic of campaigns/topics.yaml" in result.output


def test_with_topics_a_campaign_without_one_is_warned_about(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    with_topics(tmp_path)
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0, result.output
    assert (
        "warning: campaigns/news.yaml: no topic: its unsubscribe link leaves all our email"
        in result.output
    )
    assert "ok campaigns/topics.yaml: 2 topics: newsletter, events" in result.output
    write(tmp_path / "campaigns" / "news.yaml", CAMPAIGN + "topic: newsletter\n")
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0 and "warning: campaigns/news.yaml: no topic" not in result.output
    # Without topics.yaml nothing changes for anyone.
    (tmp_path / "campaigns" / "topics.yaml").unlink()
    write(tmp_path / "campaigns" / "news.yaml", CAMPAIGN)
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0 and "no topic" not in result.output


def test_a_malformed_topics_file_is_located(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, CAMPAIGN + "topic: newsletter\n")
    cases = {
        TOPICS.replace("  title: {ko", "  titel: {ko", 1): (
            "campaigns/topics.yaml:2: unknown key newsletter.titel: did you mean title?"
        ),
        TOPICS.replace('{ko: "시티넷 뉴스레터", en: ', "{en: "): (
            "campaigns/topics.yaml:2: newsletter.title: give the title in ko too "
            "(or one text for every language)"
        ),
        TOPICS.replace("events:", "Events & Webinars:"): (
            "campaigns/topics.yaml:3: topic name 'Events & Webinars': use lower-case letters, "
            "digits, '-' and '_' (at most 64), e.g. events"
        ),
        TOPICS.replace("events:\n", "events\n"): "campaigns/topics.yaml:3: YAML syntax error",
        "newsletter: CityNet newsletter\n": (
            "campaigns/topics.yaml:1: topic 'newsletter': write its title:, e.g. title: {ko: …, en: …}"
        ),
        "": "campaigns/topics.yaml:1: a mapping of topic names to their titles",
    }
    for text, expected in cases.items():
        write(tmp_path / "campaigns" / "topics.yaml", text)
        for args in ([], ["campaigns/topics.yaml"], ["campaigns/news.yaml"]):
            result = run_cli("campaigns", "validate", *args, env=ENV)
            assert result.exit_code == 1, (text, result.output)
            assert "Traceback" not in result.output
            shown = errors_of(result.output)
            assert any(line.startswith(f"error: {expected}") for line in shown), (text, shown)
            assert len(shown) == len(set(shown)), "a shared file's error is printed once"


def test_a_plain_title_serves_every_language(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path, CAMPAIGN + "topic: news\n")
    write(tmp_path / "campaigns" / "topics.yaml", "news:\n  title: CityNet News\n")
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0, result.output


def test_send_refuses_an_unknown_topic_before_anything_is_queued(
    session: Session, db_url: str, tmp_path: Path
) -> None:
    import pytest

    settings = settings_for(db_url, tmp_path)
    project_with(tmp_path, session, campaign=CAMPAIGN + "topic: evnts\n")
    with_topics(tmp_path)
    with pytest.raises(FileErrors, match="unknown topic 'evnts'"):
        send(tmp_path / "campaigns" / "news.yaml", settings, session)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0
    assert session.scalar(select(func.count()).select_from(Delivery)) == 0
