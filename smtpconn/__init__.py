"""smtpconn: connect your own mail server to a help desk through an authenticated SMTP connector.

The package is a library first: every command of the CLI (``smtpconn.cli``) is a thin layer over
functions in ``smtpconn.profile``, ``smtpconn.checks``, ``smtpconn.smtp`` and ``smtpconn.relay``.

The public surface is what the ``__all__`` of each package names: here the exception root and
its branches (every exception smtpconn raises is an :class:`SmtpconnError`, see
:mod:`smtpconn.errors`) and the sub-packages. Sub-packages are not imported here, so that
``import smtpconn`` (and the CLI's start-up) stays cheap.
"""

from smtpconn.errors import (
    CouldNotRun,
    ExitCode,
    ProfileError,
    SmtpconnError,
    SmtpconnFailure,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CouldNotRun",
    "ExitCode",
    "ProfileError",
    "SmtpconnError",
    "SmtpconnFailure",
    "UsageError",
    "__version__",
    "addresses",
    "checks",
    "cli",
    "dns",
    "errors",
    "net",
    "profile",
    "relay",
    "sendtest",
    "settings",
    "smtp",
]
