"""The pure half of failure tracing: what ``diagnose``'s report-only sessions found, in words.

Each function reads a ``Probe`` and returns (summary, detail, fix) for the check whose verdict
the cause changes, or None when there is no cause to tell (the judge then says what it always
said). Kept apart from ``judge`` so that each cause is one small, separately tested rule.
"""

from __future__ import annotations

from smtpconn.checks.tls_auth import advice
from smtpconn.checks.tls_auth.diagnose import MODERN
from smtpconn.checks.tls_auth.probe import Probe
from smtpconn.smtp.certinfo import summarise_certificate
from smtpconn.smtp.failures import FailureKind

Explanation = tuple[str, str, str]


def _offered(probe: Probe) -> str:
    found = probe.diagnosis
    assert found is not None
    return ", ".join(f"{v} ({c})" for v, c in zip(found.versions, found.ciphers, strict=True))


def _anonymous(cipher: str) -> bool:
    """An OpenSSL cipher name without server authentication (aNULL): ADH-..., AECDH-..."""
    return cipher.startswith(("ADH-", "AECDH-")) or "-anon-" in cipher.lower()


def old_versions(probe: Probe) -> Explanation | None:
    """tls.version, when the handshake failed: the versions the server does speak."""
    found = probe.diagnosis
    if found is None or not found.only_old:
        return None
    return (
        f"the server speaks only {', '.join(found.versions)}: TLS 1.2 or newer is required",
        f"a report-only handshake for each version completed with: {_offered(probe)}",
        advice.OLD_VERSIONS_ONLY,
    )


def modern_versions(probe: Probe) -> Explanation | None:
    """tls.version, when the handshake failed for another reason but the scan completed TLS 1.2
    or newer: the version is not the problem, and the pass says which ones are offered."""
    found = probe.diagnosis
    if found is None or not found.versions or found.only_old:
        return None
    modern = [v for v in found.versions if v in MODERN]
    old = [v for v in found.versions if v not in MODERN]
    also = f" (also {', '.join(old)}, which smtpconn never uses)" if old else ""
    return (
        f"{', '.join(modern)} offered{also}",
        f"a report-only handshake for each version completed with: {_offered(probe)}",
        "",
    )


def handshake(probe: Probe, host: str) -> Explanation | None:
    """tls.starttls (tls.connect for implicit TLS): why no handshake completed."""
    found = probe.diagnosis
    if found is None or not found.scanned:
        return None
    failure = probe.tls_failure.message if probe.tls_failure else ""
    if found.only_old:
        return (
            f"the handshake failed: the server speaks only {', '.join(found.versions)}",
            failure,
            advice.OLD_VERSIONS_ONLY,
        )
    if found.versions and all(_anonymous(cipher) for cipher in found.ciphers):
        # Only unauthenticated key exchange completes: the server has no certificate it can
        # use (Postfix whose chain file is missing or unreadable still says 220 to STARTTLS).
        return (
            "the handshake failed: the server cannot use its certificate or key; it completes "
            f"a handshake only with anonymous ciphers, which no client accepts: {_offered(probe)}",
            failure,
            advice.CERT_KEY_UNLOADABLE,
        )
    if found.versions:
        return (
            "the handshake failed: no cipher in common; the server completes a handshake only "
            f"with ciphers modern clients refuse: {_offered(probe)}",
            failure,
            advice.NO_SHARED_CIPHER,
        )
    if found.sni_refused:
        return (
            f"the handshake failed: the server refuses the name {host} in SNI",
            failure,
            advice.SNI_REFUSED.format(host=host),
        )
    return (
        "the handshake failed with every protocol version and cipher: the server cannot use "
        "its certificate or key",
        failure,
        advice.CERT_KEY_UNLOADABLE,
    )


def missing_intermediate(probe: Probe) -> Explanation | None:
    """tls.certificate with an untrusted issuer: did the server leave out an intermediate?"""
    chain = probe.tls.peer_chain_der if probe.tls else ()
    if not chain:
        return None
    last = summarise_certificate(chain[-1])
    if last.issuer == last.subject:
        return None  # the chain ends at a root: the root is what is untrusted
    sent = "only its own certificate" if len(chain) == 1 else f"{len(chain)} certificates"
    # Unverifiable from here: whether that issuer is an intermediate the server should send
    # (the usual case with a public CA) or a private root; the summary names both.
    return (
        f"untrusted issuer: the server sends {sent}, without the certificate of its issuer "
        f"{last.issuer}: a chain missing its intermediate (or a private CA not trusted here)",
        "sent: " + " <- ".join(summarise_certificate(c).subject for c in chain),
        advice.MISSING_INTERMEDIATE.format(issuer=last.issuer),
    )


def sni_note(probe: Probe, host: str) -> Explanation | None:
    """tls.hostname / tls.certificate: the certificate differs without SNI."""
    found = probe.diagnosis
    if found is None or found.no_sni_names is None:
        return None
    names = ", ".join(found.no_sni_names) or "no names"
    return (
        f"; the certificate depends on SNI (without SNI the server sends one for {names})",
        f"asked for {host} in SNI the server sent a different certificate than without SNI",
        advice.SNI_DEPENDS.format(host=host, names=names),
    )


def starttls_refused(probe: Probe) -> Explanation | None:
    """tls.starttls refused with 454 (Postfix: "454 4.7.0 TLS not available due to local
    problem"): the server could not load its certificate or key."""
    failure = probe.tls_failure
    if failure is None or failure.kind is not FailureKind.STARTTLS_REJECTED:
        return None
    if failure.reply is None or failure.reply.code != 454:
        return None
    return (
        f"STARTTLS is refused with {failure.reply.code} ({failure.reply.text}): the server "
        "cannot load its certificate or key",
        failure.message,
        advice.STARTTLS_454,
    )
