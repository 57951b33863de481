"""The SMTP client shared by verify, send-test and the relay: one session with its security
policy (``session``), delivery over it (``delivery``), how a session fails (``failures``),
replies (``replies``), settings vocabulary (``vocab``), SASL (``sasl``), certificate summaries
(``certinfo``) and DKIM signing (``dkim``).

Modules are imported on use; ``__all__`` names the public ones.
"""

__all__ = [
    "certinfo",
    "delivery",
    "dkim",
    "failures",
    "replies",
    "sasl",
    "session",
    "vocab",
]
