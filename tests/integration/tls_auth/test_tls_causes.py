"""TLS failures traced to their cause, against real TLS servers configured with each defect:
a server speaking only TLS 1.0/1.1, one whose ciphers a modern client refuses, one without a
usable certificate, a leaf served without its intermediate, and certificates chosen by SNI.

Each must be named for what it is, with its fix, and no credential may be sent to any of them.
"""

from __future__ import annotations

import datetime as dt
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.lab import Lab
from smtpconn.addresses import parse_address
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.tls_auth import run_tls_auth
from smtpconn.dns import CachingResolver
from smtpconn.dns.resolvers import make_resolver, parse_resolver
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from smtpconn.settings import Settings
from tests.integration.tls_auth.tiny_smtp import Behaviour, TinySmtp, make_cert, tiny_smtp

SECRET_ENV = "SMTPCONN_TEST_TLS_CAUSES_SECRET"
SECRET = "causes-secret-4711"
INTERMEDIATE_CN = "smtpconn lab intermediate R7"


def _ca(d: Path, cn: str, issuer: tuple[Path, Path] | None) -> tuple[Path, Path]:
    """A CA certificate: a root when ``issuer`` is None, else an intermediate under it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = subject, key
    if issuer is not None:
        issuer_name = x509.load_pem_x509_certificate(issuer[0].read_bytes()).subject
        signer = serialization.load_pem_private_key(issuer[1].read_bytes(), password=None)  # type: ignore[assignment]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    name = cn.replace(" ", "-")
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    assert lab.ca is not None
    d = tmp_path_factory.mktemp("cause-certs")
    root = (lab.ca.ca_cert, lab.ca.ca_key)
    # The lab root allows no intermediate (path length 0): a root of our own, trusted with it.
    chain_root = _ca(d, "smtpconn test root", None)
    inter = _ca(d, INTERMEDIATE_CN, chain_root)
    leaf = make_cert(d, "leaf", lab.server_name, issuer=inter)
    trusted = d / "trusted.pem"
    trusted.write_bytes(Path(lab.ca_file).read_bytes() + chain_root[0].read_bytes())
    full = d / "fullchain.pem"
    full.write_bytes(leaf[0].read_bytes() + inter[0].read_bytes())
    return {
        "good": make_cert(d, "good", lab.server_name, issuer=root),
        "other": make_cert(d, "other", "other-name.example.test", issuer=root),
        "leaf-only": leaf,
        "fullchain": (full, leaf[1]),
        "trusted": (trusted, trusted),
    }


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def _server_context(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


async def _verify(
    lab: Lab, server: TinySmtp, *, trusted: bool = False, ca_file: Path | None = None
) -> dict[str, CheckResult]:
    settings = Settings(
        resolvers=(parse_resolver(lab.resolver),), ca_file=ca_file or lab.ca_file, timeout=5
    )
    ctx = CheckContext(
        settings=settings,
        base_dir=Path("."),
        resolver=CachingResolver(make_resolver(settings.resolvers, timeout=5)),
    )
    entry = SupportAddress(
        parse_address("support@good.test"),
        Mode.OUTBOUND_ONLY,
        Workflow.AUTHENTICATED,
        OutboundServer(
            lab.server_name,
            server.port,
            Security.STARTTLS,
            AuthMechanism.AUTO,
            "support",
            SecretRef("env", SECRET_ENV),
        ),
    )
    results = {r.id: r for r in await run_tls_auth(ctx, entry)}
    for found in results.values():
        if found.status is not Status.PASS:
            assert found.fix, f"{found.id} {found.status} has no fix"
    # No defective server may be trusted with the password, in clear text or over TLS.
    assert trusted or not [line for line in server.received if line.split(" ")[1:2] == ["AUTH"]]
    return results


def _sessions(server: TinySmtp) -> int:
    return sum(1 for line in server.received if line == "CLEAR QUIT" or "STARTTLS" in line)


async def test_a_healthy_server_costs_no_extra_session(
    lab: Lab, certs: dict[str, tuple[Path, Path]]
) -> None:
    with tiny_smtp(Behaviour(context=_server_context(certs["good"]))) as server:
        results = await _verify(lab, server, trusted=True)
    assert results["tls.starttls"].status is Status.PASS
    assert results["tls.certificate"].status is Status.PASS
    assert sum(1 for line in server.received if line == "CLEAR STARTTLS") == 1


async def test_tls_10_11_only_is_a_version_fail_naming_the_versions(
    lab: Lab, certs: dict[str, tuple[Path, Path]]
) -> None:
    context = _server_context(certs["good"])
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 serves TLS 1.0/1.1 only at level 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with tiny_smtp(Behaviour(context=context)) as server:
        results = await _verify(lab, server)
    version = results["tls.version"]
    assert version.status is Status.FAIL
    assert "only TLSv1.1, TLSv1:" in version.summary
    assert "smtpd_tls_protocols = >=TLSv1.2" in version.fix and "SCHANNEL" in version.fix
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL and "speaks only TLSv1.1, TLSv1" in starttls.summary
    assert results["auth.login"].status is not Status.PASS


async def test_no_shared_cipher_names_what_the_server_offers(
    lab: Lab, certs: dict[str, tuple[Path, Path]]
) -> None:
    context = _server_context(certs["good"])
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC with SHA-1: a modern client refuses it
    with tiny_smtp(Behaviour(context=context)) as server:
        results = await _verify(lab, server)
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert "no cipher in common" in starttls.summary
    assert "TLSv1.2 (ECDHE-ECDSA-AES128-SHA)" in starttls.summary
    assert "ECDHE+AESGCM" in starttls.fix and "Enable-TlsCipherSuite" in starttls.fix
    # The version is not the problem, and the pass says which one the scan completed.
    assert results["tls.version"].status is Status.PASS
    assert results["tls.version"].summary == "TLSv1.2 offered"


@pytest.mark.parametrize("how", ["no-certificate", "close"])
async def test_a_server_that_cannot_use_its_certificate_or_key(lab: Lab, how: str) -> None:
    behaviour = (
        Behaviour(context=_server_context(None))
        if how == "no-certificate"
        else Behaviour(starttls="close")
    )
    with tiny_smtp(behaviour) as server:
        results = await _verify(lab, server)
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert "cannot use its certificate or key" in starttls.summary
    assert "smtpd_tls_chain_files" in starttls.fix and "HasPrivateKey" in starttls.fix
    # The version scan and the no-SNI attempt really ran: five more STARTTLS sessions.
    assert sum(1 for line in server.received if line == "CLEAR STARTTLS") == 6


async def test_starttls_refused_with_454_is_an_unloadable_certificate_or_key(lab: Lab) -> None:
    """Postfix answers STARTTLS with 454 4.7.0 when it cannot load its certificate or key."""
    with tiny_smtp(Behaviour(starttls="454")) as server:
        results = await _verify(lab, server)
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert "refused with 454" in starttls.summary
    assert "cannot load its certificate or key" in starttls.summary
    assert "smtpd_tls_chain_files" in starttls.fix and "HasPrivateKey" in starttls.fix


async def test_a_chain_missing_its_intermediate_names_the_issuer(
    lab: Lab, certs: dict[str, tuple[Path, Path]]
) -> None:
    with tiny_smtp(Behaviour(context=_server_context(certs["leaf-only"]))) as server:
        results = await _verify(lab, server, ca_file=certs["trusted"][0])
    certificate = results["tls.certificate"]
    assert certificate.status is Status.FAIL
    assert "a chain missing its intermediate" in certificate.summary
    assert INTERMEDIATE_CN in certificate.summary
    assert "fullchain.pem" in certificate.fix and "Intermediate Certification" in certificate.fix
    with tiny_smtp(Behaviour(context=_server_context(certs["fullchain"]))) as server:
        fixed = await _verify(lab, server, trusted=True, ca_file=certs["trusted"][0])
    assert fixed["tls.certificate"].status is Status.PASS
    assert fixed["auth.login"].status is Status.FAIL  # tiny_smtp refuses every login


async def test_a_server_refusing_the_name_in_sni(
    lab: Lab, certs: dict[str, tuple[Path, Path]]
) -> None:
    context = _server_context(certs["other"])

    def only_other(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is not None and name != "other-name.example.test":
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    context.sni_callback = only_other
    with tiny_smtp(Behaviour(context=context)) as server:
        results = await _verify(lab, server)
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert f"refuses the name {lab.server_name} in SNI" in starttls.summary
    assert "tls_server_sni_maps" in starttls.fix and "TlsCertificateName" in starttls.fix


async def test_a_certificate_chosen_by_sni(lab: Lab, certs: dict[str, tuple[Path, Path]]) -> None:
    # The default certificate is right; the SNI entry for the host points at a wrong one.
    context = _server_context(certs["good"])
    wrong = _server_context(certs["other"])

    def by_name(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name == lab.server_name:
            obj.context = wrong

    context.sni_callback = by_name
    with tiny_smtp(Behaviour(context=context)) as server:
        results = await _verify(lab, server)
    hostname = results["tls.hostname"]
    assert hostname.status is Status.FAIL
    assert "depends on SNI" in hostname.summary and lab.server_name in hostname.summary
    assert "tls_server_sni_maps" in hostname.fix
    # Without the defect, no SNI note.
    with tiny_smtp(Behaviour(context=_server_context(certs["other"]))) as server:
        plain = await _verify(lab, server)
    assert plain["tls.hostname"].status is Status.FAIL
    assert "SNI" not in plain["tls.hostname"].summary


async def test_a_real_postfix_that_cannot_load_its_key_is_traced_to_it(lab: Lab) -> None:
    """The lab Postfix's bad_key port names a key file that is not there: Postfix logs "error
    opening chain file", still offers STARTTLS and says 220, then cannot complete a handshake
    (the outage after a renewal that left the key behind)."""
    assert lab.postfix is not None
    since = lab.postfix.log_position()
    server = TinySmtp.__new__(TinySmtp)  # only its port and what it received are read
    server.port, server.received = lab.ports["bad_key"], []
    results = await _verify(lab, server)
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL
    assert "cannot use its certificate or key" in starttls.summary
    assert "smtpd_tls_chain_files" in starttls.fix
    assert results["auth.login"].status is Status.SKIP
    # The smtpd process said why when it started (possibly before this test's sessions).
    assert "bad_key/smtpd" in lab.postfix.log.read_text()
    assert "error opening chain file" in lab.postfix.log.read_text()
    assert "sasl_method" not in lab.postfix.log_text(since)  # the password never went to it
