"""Every command documents itself with an example; user errors are one line."""

import click
import pytest

from outreach.cli import cli


def _commands(group: click.Group, prefix: str = "outreach") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [(prefix, group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


@pytest.mark.parametrize(
    ("path", "command"), _commands(cli), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    assert command.help and len(command.help.strip()) > 20, f"{path} has no help text"
    assert "Example:" in command.help, f"{path} has no example in its help"
    example = command.help.split("Example:", 1)[1]
    assert path.split(" ", 1)[-1].split(" ")[0] in example or path == "outreach"


def test_bad_configuration_is_one_line(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("init", env={"OUTREACH_DATABASE_URL": "mysql://x"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "OUTREACH_DATABASE_URL" in lines[0]


def test_brackets_in_errors_print_as_they_are(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import write

    write(tmp_path / "campaigns" / "segments.yaml", "s:\n  where: {country: [KR, [bold]]}\n")
    assert run_cli("init").exit_code == 0
    result = run_cli("segments", "list")
    assert result.exit_code != 0
    assert "expected a value, got list" in result.output and "Traceback" not in result.output
