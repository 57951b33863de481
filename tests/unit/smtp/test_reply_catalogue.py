"""The reply-code catalogue against replies as Microsoft 365, Google and Postfix send them."""

from __future__ import annotations

import pytest

from smtpconn.smtp.replies import Reply
from smtpconn.smtp.reply_catalogue import (
    Effect,
    Stage,
    annotated,
    catalogue,
    enhanced_code,
    explain,
    is_throttling,
)


def reply(code: int, *lines: str) -> Reply:
    return Reply(code, lines)


# (reply, expected catalogue key, words the cause or fix must contain, effect)
REAL_REPLIES = [
    (
        reply(
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
            "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
            "[SN4PR0501CA0054.namprd05.prod.outlook.com]",
        ),
        "535 5.7.139",
        "Set-CASMailbox",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            535,
            "5.7.139 Authentication unsuccessful, user is locked by your organization's security "
            "defaults policy. Contact your administrator.",
        ),
        "535 5.7.139",
        "Security Defaults",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            535,
            "5.7.139 Authentication unsuccessful, the request did not meet the criteria to be "
            "authenticated successfully. Contact your administrator.",
        ),
        "535 5.7.139",
        "Conditional Access",
        Effect.FIX_SETUP,
    ),
    (
        reply(535, "5.7.3 Authentication unsuccessful [BN6PR1101CA0012.namprd11.prod.outlook.com]"),
        "535 5.7.3",
        "UPN",
        Effect.FIX_SETUP,
    ),
    (
        reply(550, "5.7.30 Basic authentication is not supported for Client Submission."),
        "550 5.7.30",
        "--oauth-flow",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            530,
            "5.7.57 Client not authenticated to send mail. Error: 535 5.7.139 Authentication "
            "unsuccessful [MW4PR03CA0120.namprd03.prod.outlook.com]",
        ),
        "530 5.7.57",
        "outbound.auth",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            550,
            "5.7.60 SMTP; Client does not have permissions to send as this sender "
            "[AM6P193MB0032.EURP193.PROD.OUTLOOK.COM]",
        ),
        "550 5.7.60",
        "Add-RecipientPermission",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            432,
            "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded "
            "[Hostname=DM6PR06MB5273.namprd06.prod.outlook.com]",
        ),
        "432 4.3.2",
        "max_connections",
        Effect.THROTTLED,
    ),
    (
        reply(
            554,
            "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
            "process message due to a permanent exception with message [BeginDiagnosticData]",
        ),
        "554 5.2.0",
        "10,000 recipients",
        Effect.THROTTLED,
    ),
    (
        reply(
            535,
            "5.7.8 Username and Password not accepted. For more information, go to",
            "5.7.8  https://support.google.com/mail/?p=BadCredentials a1-20020a05 - gsmtp",
        ),
        "535 5.7.8",
        "--provider google",
        Effect.FIX_SETUP,
    ),
    (
        reply(535, "5.7.8 Error: authentication failed: authentication failure"),
        "535 5.7.8",
        "outbound.username",
        Effect.FIX_SETUP,
    ),
    (
        reply(
            421,
            "4.7.0 Try again later, closing connection. (EHLO) d2-20020a05 - gsmtp",
        ),
        "421 4.7.0",
        "Google Admin console",
        Effect.THROTTLED,
    ),
    (
        reply(451, "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77719)"),
        "451 4.7.500",
        "backs off",
        Effect.THROTTLED,
    ),
]


@pytest.mark.parametrize(("server_reply", "key", "words", "effect"), REAL_REPLIES)
def test_each_real_reply_gets_its_cause_fix_and_effect(
    server_reply: Reply, key: str, words: str, effect: Effect
) -> None:
    meaning = explain(server_reply)
    assert meaning is not None
    assert meaning.key == key
    assert words in meaning.cause + " " + meaning.fix
    assert meaning.effect is effect


def test_454_means_a_certificate_problem_after_starttls_and_login_throttling_after_auth() -> None:
    postfix = reply(454, "4.7.0 TLS not available due to local problem")
    starttls = explain(postfix, Stage.STARTTLS)
    assert starttls is not None and "certificate" in starttls.cause
    google = reply(454, "4.7.0 Too many login attempts, please try again later. x1 - gsmtp")
    auth = explain(google, Stage.AUTH)
    assert auth is not None and auth.throttling
    # the same Postfix reply seen after AUTH is the back end, not a certificate
    backend = explain(postfix, Stage.AUTH)
    assert backend is not None and backend.effect is Effect.RETRY


def test_throttling_replies_are_told_apart_from_failures() -> None:
    assert is_throttling(reply(432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"))
    assert is_throttling(reply(421, "4.7.0 Try again later, closing connection."))
    assert not is_throttling(reply(550, "5.7.30 Basic authentication is not supported"))
    assert not is_throttling(reply(451, "4.3.0 Error: queue file write error"))
    # a 554 5.2.0 that is not a quota is an ordinary failure
    assert not is_throttling(reply(554, "5.2.0 STOREDRV.Deliver.Exception:StoreDriverException"))


def test_unknown_replies_and_replies_without_enhanced_codes_have_no_meaning() -> None:
    assert explain(reply(250, "2.0.0 Ok: queued as 4Xyz")) is None
    assert explain(reply(535, "authentication failed")) is None
    assert enhanced_code(reply(535, "authentication failed")) == ""
    assert enhanced_code(reply(432, "4.3.2 STOREDRV")) == "4.3.2"
    assert enhanced_code(reply(550, "no 5.1.1 in front")) == ""


def test_annotated_puts_reply_cause_and_fix_on_one_line() -> None:
    refused = reply(550, "5.7.30 Basic authentication is not supported for Client Submission.")
    meaning = explain(refused)
    assert meaning is not None
    line = annotated(str(refused), meaning)
    assert line.startswith("550 5.7.30 Basic authentication")
    assert "Microsoft 365" in line and "fix: use OAuth" in line
    assert "\n" not in line and "\r" not in line


def test_the_catalogue_covers_what_issue_12_names() -> None:
    keys = {meaning.key for meaning in catalogue()}
    wanted = {
        "535 5.7.139", "535 5.7.3", "550 5.7.30", "530 5.7.57", "550 5.7.60", "432 4.3.2",
        "554 5.2.0", "535 5.7.8", "421 4.7.0", "454 4.7.0",
    }  # fmt: skip
    assert wanted <= keys
    for meaning in catalogue():
        assert meaning.cause and meaning.fix
