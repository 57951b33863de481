"""smtpconn: connect your own mail server to a help desk through an authenticated SMTP connector.

The package is a library first: every command of the CLI (``smtpconn.cli``) is a thin layer over
functions in ``smtpconn.profile``, ``smtpconn.checks``, ``smtpconn.smtp`` and ``smtpconn.relay``.
"""

__version__ = "0.1.0"
