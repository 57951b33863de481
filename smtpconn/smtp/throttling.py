"""Whether a server's reply means "you are sending too fast / too much", as opposed to a
problem with this message or recipient.

A throttling reply concerns the sender's login or connection rate, not the mail: the relay slows
that server's lane down and retries, and never bounces on it, even when the server used a 5xx
code for a quota (Microsoft 365 answers ``554 5.2.0 ...SubmissionQuotaExceededException`` for
its daily recipient limit; the quota passes, the mail stays good).

One predicate, kept apart so that the reply-code catalogue can replace it in one place.
"""

from __future__ import annotations

import re

from smtpconn.smtp.replies import Reply

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

# Enhanced status codes that, on a 4xx reply, mean the sender is being slowed down:
# 4.3.2 system not accepting messages (Microsoft 365 "STOREDRV.ClientSubmit; sender thread
# limit exceeded" on a 432), 4.4.5 system congestion, 4.7.500 (Microsoft "Server busy"),
# 4.7.650 (Outlook.com rate limited), 4.7.28 (Google unusual rate), 4.2.1 (Google "receiving
# mail at a rate that prevents additional messages").
_THROTTLE_STATUS = frozenset({"4.3.2", "4.4.5", "4.7.500", "4.7.650", "4.7.28", "4.2.1"})
_THROTTLE_TEXT = re.compile(
    r"rate.?limit|throttl|too many connections|too much mail|too many messages|"
    r"concurrency limit|thread limit|server busy|sending (?:limit|quota)|quota.?exceeded",
    re.IGNORECASE,
)
# A 5xx is a throttle only when it names the sender's sending quota; "5.2.2 mailbox full /
# quota exceeded" is the recipient's mailbox and bounces as before.
_SENDER_QUOTA = re.compile(
    r"submission.?quota|quota.?exceeded|sending (?:limit|quota)|daily (?:user )?sending",
    re.IGNORECASE,
)


def enhanced_status(text: str) -> str | None:
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def is_throttling(reply: Reply) -> bool:
    """True for a reply that asks the sender to slow down or wait for a quota."""
    status = enhanced_status(reply.text)
    if reply.transient:
        if status in _THROTTLE_STATUS:
            return True
        # Google's and Postfix's (anvil) connection and rate limits: 421 4.7.0.
        if reply.code == 421 and status == "4.7.0":
            return True
        return status != "4.5.3" and bool(_THROTTLE_TEXT.search(reply.text))
    if reply.permanent:
        return status not in ("5.2.2", "5.1.1") and bool(_SENDER_QUOTA.search(reply.text))
    return False
