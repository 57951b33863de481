"""A throw-away test CA and the certificates the lab's servers present.

Files written into the given directory (all PEM; keys mode 0600):

================  ==========================================================================
ca.pem            the lab CA: the ONLY trust anchor tests and ``SMTPCONN_CA_FILE`` should use
server.pem/.key   mail.good.test (SAN DNS mail.good.test + IP 127.0.0.1), signed by the lab CA
expired.pem/.key  same names, signed by the lab CA, but expired yesterday
expiring.pem/.key same names, signed by the lab CA, valid for only 10 more days (< 21: warn)
wronghost.pem/.key  signed by the lab CA, valid, but for wrong-host.example.test only
untrusted-ca.pem  a second CA nobody trusts
untrusted.pem/.key  mail.good.test + 127.0.0.1, valid, but signed by untrusted-ca
relay.pem/.key    relay.helpdesk.test (+ IP 127.0.0.1, localhost), signed by the lab CA, for
                  the help desk's relay (smtpconn relay) under test
================  ==========================================================================

Leaf certificates share one key per purpose (a lab needs no per-cert keys and RSA generation is
the slow part of start-up).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import zones

WRONG_HOST = "wrong-host.example.test"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LabCA:
    """Paths of everything ``write_lab_ca`` created."""

    ca_cert: Path
    ca_key: Path
    server: CertFiles
    expired: CertFiles
    expiring: CertFiles
    wrong_host: CertFiles
    untrusted: CertFiles
    untrusted_ca_cert: Path
    relay: CertFiles

    @classmethod
    def at(cls, directory: Path) -> LabCA:
        """The paths ``write_lab_ca(directory)`` writes (for a lab started by another process)."""

        def cf(name: str) -> CertFiles:
            return CertFiles(directory / f"{name}.pem", directory / f"{name}.key")

        return cls(
            ca_cert=directory / "ca.pem",
            ca_key=directory / "ca.key",
            server=cf("server"),
            expired=cf("expired"),
            expiring=cf("expiring"),
            wrong_host=cf("wronghost"),
            untrusted=cf("untrusted"),
            untrusted_ca_cert=directory / "untrusted-ca.pem",
            relay=cf("relay"),
        )


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtpconn lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _make_ca(cn: str, now: dt.datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    key: rsa.RSAPrivateKey,
    dns_names: list[str],
    ips: list[str],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def write_lab_ca(directory: Path) -> LabCA:
    """Generate the CA and every certificate the lab needs into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    ca_key, ca_cert = _make_ca("smtpconn lab CA", now)
    bad_ca_key, bad_ca_cert = _make_ca("untrusted lab CA", now)
    server_key = _key()
    relay_key = _key()

    _write_key(ca_key, directory / "ca.key")
    _write_cert(ca_cert, directory / "ca.pem")
    _write_cert(bad_ca_cert, directory / "untrusted-ca.pem")

    mail_names = [zones.MAIL_HOST, zones.POOL_HOST]
    mail_ips = [zones.MAIL_ADDR]

    def leaf(name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> CertFiles:
        files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key")
        _write_cert(cert, files.cert)
        _write_key(key, files.key)
        return files

    server = leaf(
        "server",
        _make_leaf(ca_key, ca_cert, server_key, mail_names, mail_ips, now - day, now + 365 * day),
        server_key,
    )
    expired = leaf(
        "expired",
        _make_leaf(ca_key, ca_cert, server_key, mail_names, mail_ips, now - 60 * day, now - day),
        server_key,
    )
    expiring = leaf(
        "expiring",
        _make_leaf(ca_key, ca_cert, server_key, mail_names, mail_ips, now - day, now + 10 * day),
        server_key,
    )
    wrong = leaf(
        "wronghost",
        _make_leaf(ca_key, ca_cert, server_key, [WRONG_HOST], [], now - day, now + 365 * day),
        server_key,
    )
    untrusted = leaf(
        "untrusted",
        _make_leaf(
            bad_ca_key, bad_ca_cert, server_key, mail_names, mail_ips, now - day, now + 365 * day
        ),
        server_key,
    )
    relay = leaf(
        "relay",
        _make_leaf(
            ca_key,
            ca_cert,
            relay_key,
            [zones.RELAY_HOST, "localhost"],
            [zones.MAIL_ADDR],
            now - day,
            now + 365 * day,
        ),
        relay_key,
    )
    ca = LabCA.at(directory)
    assert (ca.server, ca.expired, ca.expiring, ca.wrong_host, ca.untrusted, ca.relay) == (
        server,
        expired,
        expiring,
        wrong,
        untrusted,
        relay,
    )
    return ca
