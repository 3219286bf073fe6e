"""Errors a user can cause: each is one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user can fix; the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class ConfigError(UserError):
    """A configuration variable or `outreach.toml` key is wrong."""

    exit_code = 2


class FileError(UserError):
    """A problem in a file the user wrote, located by path and line where known."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(self.location() + ": " + message)

    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class FileErrors(UserError):
    """Several located problems found in one pass, reported together."""

    def __init__(self, errors: list[FileError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class NotFound(UserError):
    """A named thing (contact, segment, campaign) does not exist."""


def located(exc: FileError | FileErrors) -> list[FileError]:
    """The located problems an exception carries, whether it holds one or several."""
    return exc.errors if isinstance(exc, FileErrors) else [exc]
