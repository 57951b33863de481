"""Why TLS failed: extra sessions that run only after a failed handshake or certificate.

They stop right after the handshake (EHLO, QUIT): nothing is sent over them, so they may use
contexts we would never send over, purely to *report*: a context pinned to one protocol version
with every cipher at OpenSSL security level 0 (Debian's default level refuses TLS 1.0/1.1
client-side, which would hide what an old server speaks), and a session without SNI.
"""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import dataclass

from smtpconn.checks.model import CheckContext
from smtpconn.profile.model import OutboundServer
from smtpconn.smtp.failures import SmtpFailure
from smtpconn.smtp.session import SmtpSession, TlsInfo, establish

MODERN = ("TLSv1.3", "TLSv1.2")
# The versions a scan tries, newest first, with the names ``SSLObject.version()`` reports.
SCANNED = ("TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What the report-only sessions found."""

    scanned: bool = False  # a version scan ran (the normal handshake failed)
    versions: tuple[str, ...] = ()  # versions a lenient handshake completed with
    ciphers: tuple[str, ...] = ()  # the cipher the server chose for each of those versions
    sni_refused: bool = False  # no handshake with SNI = the host, one without SNI
    no_sni_names: tuple[str, ...] | None = None  # without SNI a different certificate came

    @property
    def only_old(self) -> bool:
        return bool(self.versions) and not any(v in MODERN for v in self.versions)


def _version(name: str) -> ssl.TLSVersion:
    # TLSv1/TLSv1_1 are deprecated names; we pin them only to report what a server speaks.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return {
            "TLSv1.3": ssl.TLSVersion.TLSv1_3,
            "TLSv1.2": ssl.TLSVersion.TLSv1_2,
            "TLSv1.1": ssl.TLSVersion.TLSv1_1,
            "TLSv1": ssl.TLSVersion.TLSv1,
        }[name]


def lenient_context(version: str | None = None) -> ssl.SSLContext:
    """Every cipher, no verification, optionally one version only. Never sent over."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = _version(version or "TLSv1")
        context.maximum_version = _version(version or "TLSv1.3")
    return context


async def _handshake(
    ctx: CheckContext, server: OutboundServer, name: str, address: str, context: ssl.SSLContext
) -> TlsInfo | None:
    """One session up to the handshake (and the EHLO after it); its TLS facts, or None."""
    session = SmtpSession(
        name,
        server.port,
        tls_context=context,
        ehlo_name=socket.getfqdn() or "localhost",
        timeout=ctx.settings.timeout,
        address=address,
    )
    try:
        await establish(session, server.security)
    except SmtpFailure:
        return session.tls
    finally:
        await session.quit()
    return session.tls


async def diagnose_handshake(ctx: CheckContext, server: OutboundServer, address: str) -> Diagnosis:
    """The normal handshake failed: which versions (and ciphers) does the server complete, and
    does it complete one only without SNI?"""
    versions: list[str] = []
    ciphers: list[str] = []
    for version in SCANNED:
        tls = await _handshake(ctx, server, server.host, address, lenient_context(version))
        if tls is not None:
            versions.append(tls.version)
            ciphers.append(tls.cipher)
    refused = False
    if not versions and not _is_ip(server.host):
        # An IP literal as the session's name sends no SNI (RFC 6066 forbids it).
        refused = await _handshake(ctx, server, address, address, lenient_context()) is not None
    return Diagnosis(True, tuple(versions), tuple(ciphers), sni_refused=refused)


async def diagnose_certificate(
    ctx: CheckContext, server: OutboundServer, address: str, leaf_der: bytes | None
) -> Diagnosis:
    """The certificate failed: does the server send a different one when asked without SNI?"""
    from smtpconn.smtp.certinfo import summarise_certificate

    if leaf_der is None or _is_ip(server.host):
        return Diagnosis()
    tls = await _handshake(ctx, server, address, address, lenient_context())
    if tls is None or tls.peer_cert_der is None or tls.peer_cert_der == leaf_der:
        return Diagnosis()
    return Diagnosis(no_sni_names=summarise_certificate(tls.peer_cert_der).names)


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
