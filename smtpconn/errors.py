"""Every exception smtpconn raises, under one root: :class:`SmtpconnError`.

A caller catches ``SmtpconnError`` for anything the library raises, one of its branches, or the
builtin a class mixes in (``ReplyParseError`` is also a ``ValueError``). Each carries a message
for a person and the exit code it implies; the CLI turns a :class:`UsageError` or
:class:`CouldNotRun` into one line and that code, so no traceback reaches a user for a problem
they can fix. Kinds of failure stay data (``smtp.failures.FailureKind``), not classes::

    SmtpconnError
    ├── UsageError                 bad usage or input, nothing changed (exit 2)
    │   ├── ProfileError           the profile is unreadable or breaks the schema
    │   └── SpoolLocked            relay.spool: another relay holds the spool
    ├── CouldNotRun                a network, server or resolver was out of reach (exit 3)
    └── SmtpconnFailure            one layer's report to the layer that called it
        ├── SmtpFailure            smtp.failures: an SMTP stage failed (stage, kind, reply)
        ├── PolicyError            smtp.failures: the caller asked for what the policy forbids
        ├── ReplyParseError        smtp.replies: not an SMTP reply (also a ValueError)
        ├── DnsUnavailable         dns.answers: the resolver could not tell
        ├── OAuthFailure           oauth.errors: no access token (unreachable or refused)
        ├── SinkError              relay.sinks.base: a hand-over to the help desk failed
        ├── StartTlsInjection      relay.sinks.smtp: clear text followed the 220 to STARTTLS
        │                          (also an smtplib.SMTPException)
        └── Unparsable             message.authserv: not an RFC 8601 header head (also a
                                   ValueError)

A :class:`SmtpconnFailure` is meant for its caller, which judges it (verify), reports it
(send-test) or retries and bounces (the relay); one that reaches the CLI is a bug of ours and is
reported as an internal error (exit 3), like any other unexpected exception.

This module is the bottom layer and is imported at CLI start-up, so it imports no other part of
smtpconn: the domain classes live next to the code that raises them and are re-exported here on
first use (module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smtpconn.dns.answers import DnsUnavailable
    from smtpconn.message.authserv import Unparsable
    from smtpconn.oauth.errors import OAuthFailure
    from smtpconn.relay.sinks.base import SinkError
    from smtpconn.relay.sinks.smtp import StartTlsInjection
    from smtpconn.relay.spool import SpoolLocked
    from smtpconn.smtp.failures import PolicyError, SmtpFailure
    from smtpconn.smtp.replies import ReplyParseError

__all__ = [
    "CouldNotRun",
    "DnsUnavailable",
    "ExitCode",
    "OAuthFailure",
    "PolicyError",
    "ProfileError",
    "ReplyParseError",
    "SinkError",
    "SmtpFailure",
    "SmtpconnError",
    "SmtpconnFailure",
    "SpoolLocked",
    "StartTlsInjection",
    "Unparsable",
    "UsageError",
]


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    BAD_INPUT = 2
    COULD_NOT_RUN = 3


class SmtpconnError(Exception):
    """The root: a message for the user, an optional fix, and the exit code it implies.

    ``input`` names the input the error is about in the library's words ("profile",
    "subject"): the library never knows which flag or variable a value came from, so the CLI
    adds that to the fix.
    """

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, fix: str | None = None, input: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.input = input

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} ({self.fix})"
        return self.message


class UsageError(SmtpconnError):
    """Bad usage or bad input: nothing was changed (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(UsageError):
    """The profile file is unreadable, not valid TOML, or breaks the schema (exit 2)."""

    def __init__(
        self,
        message: str,
        *,
        fix: str | None = None,
        details: list[str] | None = None,
        input: str | None = None,
    ):
        super().__init__(message, fix=fix, input=input)
        self.details = details or []


class CouldNotRun(SmtpconnError):
    """The network, a server or a resolver could not be reached (exit 3)."""

    exit_code = ExitCode.COULD_NOT_RUN


class SmtpconnFailure(SmtpconnError):
    """A layer's report to its caller, which decides what it means; never meant for a user as
    it stands, so one that reaches the CLI is an internal error (exit 3)."""

    exit_code = ExitCode.COULD_NOT_RUN


# Defined next to the code that raises them; imported on first use so that this module stays
# free of the rest of smtpconn.
_ELSEWHERE = {
    "DnsUnavailable": "smtpconn.dns.answers",
    "OAuthFailure": "smtpconn.oauth.errors",
    "PolicyError": "smtpconn.smtp.failures",
    "ReplyParseError": "smtpconn.smtp.replies",
    "SinkError": "smtpconn.relay.sinks.base",
    "SmtpFailure": "smtpconn.smtp.failures",
    "SpoolLocked": "smtpconn.relay.spool",
    "StartTlsInjection": "smtpconn.relay.sinks.smtp",
    "Unparsable": "smtpconn.message.authserv",
}


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
