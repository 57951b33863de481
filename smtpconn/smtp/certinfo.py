"""What a server's leaf certificate says, read with ``cryptography``: names, dates, issuer.

Used to explain a certificate after OpenSSL has judged it (which names it does cover, when it
expires), and to report expiry and names when ``--insecure`` skipped OpenSSL's verdict.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CertSummary:
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def names(self) -> tuple[str, ...]:
        return self.dns_names + self.ip_addresses

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400

    def matches_host(self, host: str) -> bool:
        """RFC 6125 matching: SAN only, a wildcard stands for exactly one left-most label."""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            ip = None
        if ip is not None:
            return ip.compressed in self.ip_addresses
        wanted = host.lower().rstrip(".")
        for name in self.dns_names:
            pattern = name.lower().rstrip(".")
            if pattern == wanted:
                return True
            wildcard = pattern.startswith("*.") and pattern.count(".") >= 2
            if wildcard and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
                return True
        return False


def _name_text(name: object) -> str:
    from cryptography.x509.oid import NameOID

    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)  # type: ignore[attr-defined]
    if attrs:
        return str(attrs[0].value)
    return str(name.rfc4514_string())  # type: ignore[attr-defined]


def summarise_certificate(der: bytes) -> CertSummary:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    dns_names: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [ip.compressed for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertSummary(
        subject=_name_text(cert.subject),
        issuer=_name_text(cert.issuer),
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ips),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
