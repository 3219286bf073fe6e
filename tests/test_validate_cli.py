"""`campaigns validate` as a person runs it: every file it should check, each problem once,
and the last line naming the files to fix."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write
from tests.project import CAMPAIGN, make_project
from tests.subscribe_helpers import SUBSCRIBE

ENV = {"OUTREACH_POSTAL_ADDRESS": "Seoul"}


def test_the_subscribe_settings_are_checked_by_their_own_rules(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE.replace("reply_to:", "replyto:"))
    for args in ([], ["campaigns/subscribe.yaml"]):
        result = run_cli("campaigns", "validate", *args, env=ENV)
        assert result.exit_code == 1, result.output
        assert "campaigns/subscribe.yaml:2: unknown key replyto: did you mean reply_to?" in (
            result.output
        )
        assert "template: required key is missing" not in result.output
    write(tmp_path / "campaigns" / "subscribe.yaml", SUBSCRIBE)
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0, result.output
    assert "ok campaigns/subscribe.yaml: the subscribe form's settings" in result.output


def test_the_segments_file_named_alone_is_checked_as_segments(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    result = run_cli("campaigns", "validate", "campaigns/segments.yaml", env=ENV)
    assert result.exit_code == 0, result.output
    assert "ok campaigns/segments.yaml: 3 segments" in result.output
    segments = tmp_path / "campaigns" / "segments.yaml"
    segments.write_text(segments.read_text() + "typo:\n  where: {contry: KR}\n", "utf-8")
    result = run_cli("campaigns", "validate", "campaigns/segments.yaml", env=ENV)
    assert result.exit_code == 1
    assert "error: campaigns/segments.yaml:" in result.output and "contry" in result.output
    assert "template: required key is missing" not in result.output


def test_a_broken_shared_file_is_reported_once_and_named(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    write(tmp_path / "campaigns" / "other.yaml", CAMPAIGN.replace("name: news", "name: other"))
    segments = tmp_path / "campaigns" / "segments.yaml"
    segments.write_text(segments.read_text() + "typo:\n  where: {contry: KR}\n", "utf-8")
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if "contry" in line]
    assert len(errors) == 1 and errors[0].startswith("error: campaigns/segments.yaml:")
    assert result.output.rstrip().endswith(
        "2 of 2 campaign files have errors; fix campaigns/segments.yaml"
    )


def test_outside_an_outreach_folder_it_says_why_audiences_are_not_checked(
    run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_project(tmp_path)
    result = run_cli("campaigns", "validate", env=ENV)
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if "audiences" in line)
    assert "outreach.db" in warning and "audiences are not checked" in warning
    assert not (tmp_path / "outreach.db").exists()
