"""What a server's reply means and which setting changes it: the reply-code catalogue.

Microsoft 365 and Google answer set-up problems with replies whose numbers alone say little
(``535 5.7.139`` covers half a dozen tenant settings). Every place that shows a server's answer
(verify ``auth.login``, send-test's stages, the relay's log lines and DSNs) looks the reply up
here, so the same reply gets the same cause and fix everywhere, and the relay's lanes read
``throttling`` from the same entry that explains it to a person.

Pure data and matching, no I/O: tested against replies copied from real servers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from smtpconn.smtp.replies import Reply

# RFC 3463 class.subject.detail; not the tail of a longer dotted number (an IP address).
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})\b")


class Effect(StrEnum):
    """What a sender should do with the message after this reply."""

    FIX_SETUP = "fix-setup"  # a setting is wrong: retrying unchanged cannot succeed
    THROTTLED = "throttled"  # too fast or over a quota: slow down and retry later, never bounce
    RETRY = "retry"  # a temporary condition on the server's side
    SPLIT = "split"  # too many recipients in one transaction: send the rest in another


class Stage(StrEnum):
    """The command a reply answered, where the same code means different things."""

    ANY = "any"
    STARTTLS = "starttls"
    AUTH = "auth"


@dataclass(frozen=True, slots=True)
class ReplyMeaning:
    key: str  # "535 5.7.139", the catalogue's name for the entry
    provider: str  # "Microsoft 365", "Google", "Postfix", "any server"
    cause: str
    fix: str
    effect: Effect

    @property
    def throttling(self) -> bool:
        return self.effect is Effect.THROTTLED

    @property
    def provider_specific(self) -> bool:
        """False for the entries any server may send (their text says less than the code)."""
        return self.provider != _ANY


@dataclass(frozen=True, slots=True)
class _Entry:
    code: int  # ANY_CODE: the enhanced status code alone decides, whatever reply code carries it
    enhanced: str  # "5.7.139"; "" matches a reply without an enhanced status code
    text: str  # a lower-case fragment the reply's text must contain; "" matches any text
    meaning: ReplyMeaning
    stage: Stage = Stage.ANY


def _entry(
    code: int,
    enhanced: str,
    provider: str,
    cause: str,
    fix: str,
    effect: Effect,
    *,
    text: str = "",
    stage: Stage = Stage.ANY,
) -> _Entry:
    key = enhanced if code == ANY_CODE else f"{code} {enhanced}".strip()
    return _Entry(code, enhanced, text, ReplyMeaning(key, provider, cause, fix, effect), stage)


ANY_CODE = 0
_M365 = "Microsoft 365"
_GOOGLE = "Google"
_ANY = "any server"
_OAUTH_FIX = (
    "use OAuth: `smtpconn add-address ADDRESS --readd --provider microsoft365 "
    "--oauth-flow client-credentials ...` (README: Microsoft 365)"
)
_SMTP_AUTH_ON = (
    "enable SMTP AUTH for the mailbox: `Set-CASMailbox -Identity MAILBOX "
    "-SmtpClientAuthenticationDisabled $false` (and for the tenant: "
    "`Set-TransportConfig -SmtpClientAuthenticationDisabled $false`)"
)

# More specific entries (with a text fragment) come before the general one for the same code.
_CATALOGUE: tuple[_Entry, ...] = (
    _entry(
        535,
        "5.7.139",
        _M365,
        "SMTP AUTH is disabled for the tenant or the mailbox",
        _SMTP_AUTH_ON,
        Effect.FIX_SETUP,
        text="smtpclientauthentication is disabled",
    ),
    _entry(
        535,
        "5.7.139",
        _M365,
        "Security Defaults block SMTP AUTH with a password for this tenant",
        "use OAuth (smtpconn --oauth-flow client-credentials), or turn Security Defaults off in "
        "Entra ID > Properties > Manage security defaults (not recommended)",
        Effect.FIX_SETUP,
        text="security defaults",
    ),
    _entry(
        535,
        "5.7.139",
        _M365,
        "the account is locked or its sign-in is blocked",
        "unblock the user in the Microsoft 365 admin center (Users > Active users > Block sign-in)",
        Effect.FIX_SETUP,
        text="locked",
    ),
    _entry(
        535,
        "5.7.139",
        _M365,
        "the sign-in did not meet the tenant's criteria: multi-factor authentication, a "
        "Conditional Access policy or disabled SMTP AUTH",
        _OAUTH_FIX + "; or " + _SMTP_AUTH_ON,
        Effect.FIX_SETUP,
    ),
    _entry(
        535,
        "5.7.3",
        _M365,
        "the user name or password is wrong (the user name must be the mailbox's UPN)",
        "check outbound.username is the full UPN and the password reference; better, use OAuth: "
        + _OAUTH_FIX,
        Effect.FIX_SETUP,
    ),
    _entry(
        550,
        "5.7.30",
        _M365,
        "basic authentication (a password) is switched off for SMTP client submission",
        _OAUTH_FIX,
        Effect.FIX_SETUP,
    ),
    _entry(
        530,
        "5.7.57",
        _M365,
        "the client sent MAIL FROM without authenticating",
        "set outbound.auth (xoauth2 for Microsoft 365) and make sure STARTTLS precedes AUTH",
        Effect.FIX_SETUP,
    ),
    _entry(
        550,
        "5.7.60",
        _M365,
        "the authenticated mailbox may not send as this sender address",
        "send as the mailbox itself, or grant it Send As: `Add-RecipientPermission -Identity "
        "SENDER -Trustee MAILBOX -AccessRights SendAs`",
        Effect.FIX_SETUP,
    ),
    _entry(
        432,
        "4.3.2",
        _M365,
        "more than 3 concurrent SMTP AUTH connections for this mailbox (sender thread limit)",
        "the relay slows this server's lane down by itself; keep the server's "
        "max_connections at 3 or below",
        Effect.THROTTLED,
        text="storedrv.clientsubmit",
    ),
    _entry(
        554,
        "5.2.0",
        _M365,
        "the mailbox's sending quota is used up (10,000 recipients a day, 30 messages a minute)",
        "the relay holds the replies until the window passes; lower the server's "
        "recipients_per_day / messages_per_minute, or spread the sending over more mailboxes",
        Effect.THROTTLED,
        # The SENDER's quota only: "STOREDRV.Deliver.Exception:QuotaExceededException" is a
        # recipient's mailbox over its quota, an ordinary failure.
        text="submissionquotaexceeded",
    ),
    _entry(
        451,
        "4.7.500",
        _M365,
        "the server is busy and asks the client to slow down",
        "the relay backs off by itself; nothing to change unless it persists",
        Effect.THROTTLED,
    ),
    _entry(
        421,
        "4.7.66",
        _M365,
        "TLS 1.0 and 1.1 are not accepted",
        "use TLS 1.2 or newer (smtpconn always does; a middlebox may downgrade the connection)",
        Effect.FIX_SETUP,
    ),
    _entry(
        535,
        "5.7.8",
        _GOOGLE,
        "Google refused the user name and password: password sign-in for SMTP ended in May 2025",
        "use OAuth: `smtpconn add-address ADDRESS --readd --provider google --oauth-flow "
        "service-account ...` (README: Google Workspace)",
        Effect.FIX_SETUP,
        text="username and password not accepted",
    ),
    _entry(
        535,
        "5.7.8",
        _ANY,
        "the server refused the credentials",
        "check outbound.username and the secret reference; the account must be allowed to "
        "submit with SMTP AUTH",
        Effect.FIX_SETUP,
    ),
    _entry(
        454,
        "4.7.0",
        _GOOGLE,
        "too many login attempts in a short time",
        "wait, then try again; the relay retries by itself",
        Effect.THROTTLED,
        text="too many login attempts",
        stage=Stage.AUTH,
    ),
    _entry(
        454,
        "4.7.0",
        _ANY,
        "the server cannot start TLS: it cannot load its certificate or private key",
        "on the server: check the certificate and key files and their permissions (Postfix: "
        "smtpd_tls_cert_file / smtpd_tls_key_file, then `postfix reload`; the mail log names "
        "the file)",
        Effect.FIX_SETUP,
        stage=Stage.STARTTLS,
    ),
    _entry(
        454,
        "4.7.0",
        _ANY,
        "the server could not check the credentials now (its authentication back end)",
        "try again later; if it persists, check the server's authentication back end",
        Effect.RETRY,
    ),
    _entry(
        421,
        "4.7.0",
        _GOOGLE,
        "Google limits the rate of this client or finds its traffic suspicious",
        "the relay backs off by itself; if it persists, check the sending limits of the "
        "account in the Google Admin console",
        Effect.THROTTLED,
        text="try again later",
    ),
    _entry(
        421,
        "4.7.0",
        _ANY,
        "the server asks the client to slow down or come back later",
        "the relay backs off by itself; nothing to change unless it persists",
        Effect.THROTTLED,
    ),
    _entry(
        550,
        "5.4.5",
        _GOOGLE,
        "the account's daily sending limit is reached",
        "the relay holds the replies until the limit resets; see Google's sending limits for "
        "Workspace accounts",
        Effect.THROTTLED,
        text="daily",
    ),
    _entry(
        452,
        "4.5.3",
        _ANY,
        "too many recipients in one transaction",
        "the relay sends the remaining recipients in another transaction; set the server's "
        "recipients_per_message to its limit (Google: 100)",
        Effect.SPLIT,
    ),
    # Google's "the user you are trying to contact is receiving mail at a rate that prevents
    # additional messages" is the recipient's incoming rate, not ours: like a disabled mailbox,
    # it holds back that recipient only, never the whole lane.
    _entry(
        450,
        "4.2.1",
        _ANY,
        "the recipient's mailbox is unavailable for now (disabled, busy, or receiving mail "
        "faster than its provider allows)",
        "the relay retries this recipient later by itself; the other recipients and replies "
        "are not held back",
        Effect.RETRY,
    ),
    _entry(
        ANY_CODE,
        "4.7.28",
        _ANY,
        "the server rate-limits this sender",
        "the relay backs off by itself; if it persists, check the sender's reputation",
        Effect.THROTTLED,
    ),
    _entry(
        ANY_CODE,
        "4.3.2",
        _ANY,
        "the server is not accepting messages now",
        "the relay backs off by itself; nothing to change unless it persists",
        Effect.THROTTLED,
    ),
    _entry(
        ANY_CODE,
        "4.4.5",
        _ANY,
        "the server is congested",
        "the relay backs off by itself; nothing to change unless it persists",
        Effect.THROTTLED,
    ),
    _entry(
        ANY_CODE,
        "4.7.650",
        _M365,
        "Outlook.com limits the rate of mail from this sending IP address",
        "the relay backs off by itself; if it persists, check the IP's reputation (SNDS)",
        Effect.THROTTLED,
    ),
    _entry(
        452,
        "4.3.1",
        _ANY,
        "the server is out of storage or too busy to accept more now",
        "the relay retries later by itself",
        Effect.THROTTLED,
    ),
    _entry(
        530,
        "5.7.0",
        _ANY,
        "the server requires STARTTLS before this command",
        "set outbound.security = starttls (smtpconn never sends credentials without TLS)",
        Effect.FIX_SETUP,
        text="starttls",
    ),
    _entry(
        530,
        "5.7.0",
        _ANY,
        "the server requires authentication",
        "set outbound.auth and outbound.username for this address",
        Effect.FIX_SETUP,
    ),
    _entry(
        554,
        "5.7.1",
        _ANY,
        "the server does not let this account relay to that recipient",
        "allow the authenticated account to relay (Postfix: permit_sasl_authenticated in "
        "smtpd_relay_restrictions)",
        Effect.FIX_SETUP,
        text="relay access denied",
    ),
)


def enhanced_code(reply: Reply, *, anywhere: bool = False) -> str:
    """The RFC 3463 enhanced status code at the start of the first line, where a server puts
    it (RFC 2034 §3); "" when absent. ``anywhere``: the first one in the text, for our own
    account of a failure that quotes a reply or names a status ("... (5.6.7) ...")."""
    if anywhere:
        match = _ENHANCED.search(reply.text)
    else:
        first = reply.lines[0].lstrip() if reply.lines else ""
        match = _ENHANCED.match(first)
    return ".".join(match.groups()) if match else ""


def explain(reply: Reply, stage: Stage = Stage.ANY) -> ReplyMeaning | None:
    """The catalogue's meaning of ``reply`` answered to ``stage``, or None when it has none."""
    enhanced = enhanced_code(reply)
    text = " ".join(reply.lines).lower()
    for entry in _CATALOGUE:
        if entry.code not in (reply.code, ANY_CODE) or entry.enhanced != enhanced:
            continue
        if entry.text and entry.text not in text:
            continue
        if entry.stage is not Stage.ANY and entry.stage is not stage:
            continue
        return entry.meaning
    return None


def is_throttling(reply: Reply) -> bool:
    """True when the reply asks to slow down or says the SENDER's quota is used up: the relay
    slows that server's lane down and never bounces on it, even for a 5xx quota reply (the
    quota passes, the mail stays good). A recipient's own condition (its mailbox full, over a
    quota or disabled) is never throttling: it concerns that recipient only. A reply the
    catalogue does not know is judged by its wording (:func:`_looks_like_throttling`)."""
    meaning = explain(reply)
    if meaning is not None:
        return meaning.throttling
    return _looks_like_throttling(reply)


# The rule for replies the catalogue does not know: their wording. Status codes the catalogue
# knows are its entries' business, not this rule's.
_THROTTLE_TEXT = re.compile(
    r"rate.?limit|throttl|too many connections|too much mail|too many messages|"
    r"concurrency limit|thread limit|server busy|sending (?:limit|quota)|submission.?quota",
    re.IGNORECASE,
)
# A 5xx is a throttle only when it names the sender's sending quota; a bare "quota exceeded"
# is most often a recipient's mailbox and bounces as before.
_SENDER_QUOTA = re.compile(
    r"submission.?quota|sending (?:limit|quota)|daily (?:user )?sending", re.IGNORECASE
)


_RECIPIENT_STATUS = frozenset({"2.1", "2.2", "2.3", "5.3"})


def _about_a_recipient(status: str) -> bool:
    """RFC 3463 statuses about the recipient (its address, its mailbox, too many of them),
    whatever the text says: x.1.* addressing, x.2.1 disabled, x.2.2 full, x.2.3 too big for
    it, x.5.3 too many recipients."""
    if not status:
        return False
    _, subject, detail = status.split(".")
    return subject == "1" or f"{subject}.{detail}" in _RECIPIENT_STATUS


def _looks_like_throttling(reply: Reply) -> bool:
    if _about_a_recipient(enhanced_code(reply)):
        return False
    if reply.transient:
        return bool(_THROTTLE_TEXT.search(reply.text))
    if reply.permanent:
        return bool(_SENDER_QUOTA.search(reply.text))
    return False


def annotated(text: str, meaning: ReplyMeaning) -> str:
    """``text`` (a reply as shown) followed by what the catalogue says about it."""
    return f"{text} ({meaning.provider}: {meaning.cause}; fix: {meaning.fix})"


def catalogue() -> tuple[ReplyMeaning, ...]:
    """Every entry, for the documentation and its test."""
    return tuple(entry.meaning for entry in _CATALOGUE)
