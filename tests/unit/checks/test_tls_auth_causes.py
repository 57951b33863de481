"""Failure causes on hand-built probes: which verdict each diagnosis turns into (no sockets)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.tls_auth.diagnose import Diagnosis
from smtpconn.checks.tls_auth.judge import judge
from smtpconn.checks.tls_auth.probe import Probe
from smtpconn.profile.model import OutboundServer
from smtpconn.profile.secrets import SecretRef
from smtpconn.smtp.certinfo import summarise_certificate
from smtpconn.smtp.failures import CertProblem, FailureKind, SmtpFailure, StageName
from smtpconn.smtp.replies import Reply, parse_ehlo
from smtpconn.smtp.session import TlsInfo
from smtpconn.smtp.vocab import AuthMechanism, Security

HOST = "mail.example.test"
NOW = dt.datetime.now(dt.UTC)


def _server(security: Security = Security.STARTTLS) -> OutboundServer:
    return OutboundServer(
        HOST, 587, security, AuthMechanism.AUTO, "u", SecretRef("env", "OUT_SECRET")
    )


def _failed(diagnosis: Diagnosis | None, security: Security = Security.STARTTLS) -> Probe:
    return Probe(
        _server(security),
        address="192.0.2.1",
        banner="220 hi",
        before_tls=parse_ehlo(Reply(250, (HOST, "STARTTLS"))),
        tls_failure=SmtpFailure(
            StageName.STARTTLS, FailureKind.TLS_HANDSHAKE, "the TLS handshake failed: alert"
        ),
        diagnosis=diagnosis,
    )


def _by_id(probe: Probe) -> dict[str, CheckResult]:
    return {r.id: r for r in judge(probe, insecure=False)}


def test_old_versions_only_fail_tls_version_with_the_versions() -> None:
    found = _by_id(_failed(Diagnosis(True, ("TLSv1.1", "TLSv1"), ("AES256-SHA", "AES256-SHA"))))
    assert found["tls.version"].status is Status.FAIL
    assert "only TLSv1.1, TLSv1" in found["tls.version"].summary
    assert "TLSv1 (AES256-SHA)" in found["tls.version"].detail
    assert "only TLSv1.1, TLSv1" in found["tls.starttls"].summary


def test_a_modern_version_with_refused_ciphers_is_no_shared_cipher() -> None:
    found = _by_id(_failed(Diagnosis(True, ("TLSv1.2",), ("DES-CBC3-SHA",))))
    assert "no cipher in common" in found["tls.starttls"].summary
    assert "DES-CBC3-SHA" in found["tls.starttls"].summary
    assert found["tls.version"].status is Status.PASS  # the version is not the problem


def test_only_anonymous_ciphers_completing_is_an_unusable_certificate_or_key() -> None:
    scan = Diagnosis(
        True, ("TLSv1.3", "TLSv1.2"), ("TLS_AES_256_GCM_SHA384", "ADH-AES256-GCM-SHA384")
    )
    assert "no cipher in common" in _by_id(_failed(scan))["tls.starttls"].summary  # one signed
    found = _by_id(_failed(Diagnosis(True, ("TLSv1.2",), ("ADH-AES256-GCM-SHA384",))))
    assert found["tls.starttls"].status is Status.FAIL
    assert "cannot use its certificate or key" in found["tls.starttls"].summary
    assert "anonymous ciphers" in found["tls.starttls"].summary


def test_nothing_completes_is_an_unusable_certificate_or_key_unless_sni_is_refused() -> None:
    found = _by_id(_failed(Diagnosis(True)))
    assert "cannot use its certificate or key" in found["tls.starttls"].summary
    sni = _by_id(_failed(Diagnosis(True, sni_refused=True)))
    assert f"refuses the name {HOST} in SNI" in sni["tls.starttls"].summary


def test_implicit_tls_names_the_cause_in_tls_connect() -> None:
    found = _by_id(_failed(Diagnosis(True, ("TLSv1",), ("AES128-SHA",)), Security.TLS))
    assert found["tls.connect"].status is Status.FAIL
    assert "speaks only TLSv1" in found["tls.connect"].summary


def test_no_diagnosis_keeps_the_generic_verdict() -> None:
    found = _by_id(_failed(None))
    assert found["tls.starttls"].summary == "STARTTLS is offered but the TLS handshake failed"


def _cert(cn: str, issuer: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=60))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _untrusted(chain: tuple[bytes, ...], problem: CertProblem) -> Probe:
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", False, chain[0], chain)
    return Probe(
        _server(),
        banner="220 hi",
        tls=tls,
        leaf=summarise_certificate(chain[0]),
        cert_problems=[problem],
        cert_messages=["unable to get local issuer certificate"],
    )


def test_a_leaf_sent_alone_names_its_missing_issuer() -> None:
    leaf = _cert(HOST, "Example Intermediate R3")
    found = _by_id(_untrusted((leaf,), CertProblem.UNTRUSTED_ISSUER))["tls.certificate"]
    assert found.status is Status.FAIL
    assert (
        "Example Intermediate R3" in found.summary and "missing its intermediate" in found.summary
    )
    assert "fullchain.pem" in found.fix


def test_a_chain_ending_at_a_root_is_not_a_missing_intermediate() -> None:
    chain = (_cert(HOST, "Private Root"), _cert("Private Root", "Private Root"))
    found = _by_id(_untrusted(chain, CertProblem.UNTRUSTED_ISSUER))["tls.certificate"]
    assert "missing its intermediate" not in found.summary


def test_a_certificate_that_depends_on_sni_says_so_in_the_hostname_verdict() -> None:
    leaf = _cert("other.example.test", "Example CA")
    probe = _untrusted((leaf,), CertProblem.HOSTNAME_MISMATCH)
    plain = _by_id(probe)["tls.hostname"]
    assert plain.status is Status.FAIL and "SNI" not in plain.summary
    probe.diagnosis = Diagnosis(no_sni_names=(HOST,))
    sni = _by_id(probe)["tls.hostname"]
    assert "depends on SNI" in sni.summary and HOST in sni.summary
    assert sni.fix.startswith("the server picks its certificate by SNI")


def test_a_scan_that_completes_tls_12_passes_tls_version_naming_what_is_offered() -> None:
    found = _by_id(_failed(Diagnosis(True, ("TLSv1.2", "TLSv1"), ("DES-CBC3-SHA", "AES-SHA"))))
    version = found["tls.version"]
    assert version.status is Status.PASS
    assert version.summary == "TLSv1.2 offered (also TLSv1, which smtpconn never uses)"


def test_starttls_refused_with_454_is_an_unloadable_certificate_or_key() -> None:
    reply = Reply(454, ("4.7.0 TLS not available due to local problem",))
    probe = _failed(None)
    probe.tls_failure = SmtpFailure(
        StageName.STARTTLS, FailureKind.STARTTLS_REJECTED, f"refused: {reply}", reply=reply
    )
    starttls = _by_id(probe)["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert "refused with 454 (4.7.0 TLS not available" in starttls.summary
    assert "cannot load its certificate or key" in starttls.summary
    assert "smtpd_tls_chain_files" in starttls.fix
    other = Reply(554, ("5.7.0 no",))
    probe.tls_failure = SmtpFailure(
        StageName.STARTTLS, FailureKind.STARTTLS_REJECTED, f"refused: {other}", reply=other
    )
    assert _by_id(probe)["tls.starttls"].summary == "STARTTLS is offered but refused"
