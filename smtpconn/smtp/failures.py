"""How an SMTP session fails: its stages, the kinds of failure, certificate problems, and
``SmtpFailure`` (stage, kind, reply, message, permanent), which every stage raises.

Data rather than behaviour: verify judges these, send-test reports them, the relay decides
bounce or retry from them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smtpconn.errors import SmtpconnFailure
from smtpconn.smtp.replies import Reply


class StageName(StrEnum):
    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS = "tls"  # the handshake itself (for implicit TLS, and after 220 to STARTTLS)
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    QUIT = "quit"
    RSET = "rset"  # between messages of a DeliverySession


class FailureKind(StrEnum):
    RESOLVE = "resolve"  # the host name has no address
    REFUSED = "refused"  # TCP RST: nothing listens there
    UNREACHABLE = "unreachable"  # no route, network down
    TIMEOUT = "timeout"  # no reply in time
    CLOSED = "closed"  # the server closed the connection
    BANNER_REJECTED = "banner-rejected"  # 421 / 554 greeting
    PROTOCOL = "protocol"  # the peer does not speak SMTP
    NO_STARTTLS = "no-starttls"  # STARTTLS required but not advertised
    STARTTLS_REJECTED = "starttls-rejected"  # advertised, but the command was refused
    # Bytes already waiting after the 220 to STARTTLS: a middlebox appending clear-text replies
    # that would be read as the server's first answers inside TLS (RFC 3207 §5, CVE-2011-0411).
    STARTTLS_INJECTION = "starttls-injection"
    TLS_HANDSHAKE = "tls-handshake"  # the handshake failed (not a certificate problem)
    CERTIFICATE = "certificate"  # the certificate did not verify (see CertProblem)
    TLS_TOO_OLD = "tls-too-old"  # below TLS 1.2: we will not send secrets or mail
    AUTH_NOT_OFFERED = "auth-not-offered"  # the configured mechanism is not offered
    AUTH_FAILED = "auth-failed"  # credentials refused
    REJECTED = "rejected"  # a MAIL/RCPT/DATA reply refused the message


class CertProblem(StrEnum):
    UNTRUSTED_ISSUER = "untrusted-issuer"
    SELF_SIGNED = "self-signed"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    HOSTNAME_MISMATCH = "hostname-mismatch"
    OTHER = "other"


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) that name a reason a person can act on.
_CERT_CODES: dict[int, CertProblem] = {
    2: CertProblem.UNTRUSTED_ISSUER,  # unable to get issuer certificate
    9: CertProblem.NOT_YET_VALID,
    10: CertProblem.EXPIRED,
    18: CertProblem.SELF_SIGNED,  # depth zero self-signed
    19: CertProblem.SELF_SIGNED,  # self-signed certificate in chain (a private root)
    20: CertProblem.UNTRUSTED_ISSUER,  # unable to get local issuer certificate
    21: CertProblem.UNTRUSTED_ISSUER,  # unable to verify the first certificate
    62: CertProblem.HOSTNAME_MISMATCH,
}


def classify_certificate_error(error: ssl.SSLCertVerificationError) -> CertProblem:
    problem = _CERT_CODES.get(getattr(error, "verify_code", 0) or 0)
    if problem is not None:
        return problem
    message = str(getattr(error, "verify_message", "") or error).lower()
    if "hostname mismatch" in message or "ip address mismatch" in message:
        return CertProblem.HOSTNAME_MISMATCH
    return CertProblem.OTHER


class PolicyError(SmtpconnFailure):
    """The caller asked the session to do something the policy forbids (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class StageRecord:
    stage: str
    ok: bool
    seconds: float
    code: int | None = None
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "ok": self.ok,
            "code": self.code,
            "reply": self.text,
            "seconds": round(self.seconds, 3),
        }


class SmtpFailure(SmtpconnFailure):
    """A stage failed. ``kind`` says how; ``reply`` is the server's answer when there was one."""

    def __init__(
        self,
        stage: StageName,
        kind: FailureKind,
        message: str,
        *,
        reply: Reply | None = None,
        cert_problem: CertProblem | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.reply = reply
        self.cert_problem = cert_problem
        self.permanent = permanent

    @property
    def could_not_connect(self) -> bool:
        """True when we never spoke SMTP with the server (exit 3 territory)."""
        return self.stage in (StageName.CONNECT, StageName.BANNER) and self.kind in (
            FailureKind.RESOLVE,
            FailureKind.REFUSED,
            FailureKind.UNREACHABLE,
            FailureKind.TIMEOUT,
            FailureKind.CLOSED,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "kind": self.kind.value,
            "message": self.message,
            "code": self.reply.code if self.reply else None,
            "reply": self.reply.text if self.reply else None,
            "certificate_problem": self.cert_problem.value if self.cert_problem else None,
            "permanent": self.permanent,
        }
