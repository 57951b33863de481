"""Exceptions that map onto the CLI's exit codes (design brief §3).

The library raises these; the CLI layer turns them into a one-line message and the exit code, so
no traceback ever reaches a user for a problem they can fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    BAD_INPUT = 2
    COULD_NOT_RUN = 3


class SmtpconnError(Exception):
    """Base class: a message for the user and the exit code it implies."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} ({self.fix})"
        return self.message


class UsageError(SmtpconnError):
    """Bad usage or bad input: nothing was changed (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(UsageError):
    """The profile file is unreadable, not valid TOML, or breaks the schema (exit 2)."""

    def __init__(self, message: str, *, fix: str | None = None, details: list[str] | None = None):
        super().__init__(message, fix=fix)
        self.details = details or []


class CouldNotRun(SmtpconnError):
    """The network, a server or a resolver could not be reached (exit 3)."""

    exit_code = ExitCode.COULD_NOT_RUN
