"""What to do about each TLS and AUTH finding: the fix texts of the family, in one place."""

from __future__ import annotations

from smtpconn.smtp.failures import FailureKind, SmtpFailure

RESOLVER = "check the resolver (--resolver) and try again"
BANNER_421 = (
    "try again later; if it persists, the server limits connections from this "
    "address (Postfix: smtpd_client_connection_count_limit, postscreen)"
)
BANNER_REFUSED = (
    "allow the relay's IP address on the server (it is blocked, or not on the "
    "list of clients allowed to connect)"
)
CONNECT: dict[FailureKind, str] = {
    FailureKind.REFUSED: "check outbound.host and outbound.port (587 for STARTTLS, 465 for "
    "implicit TLS), and that the server listens there",
    FailureKind.TIMEOUT: "check outbound.host/port and any firewall between here and the "
    "server (outgoing 587/465 is often blocked)",
    FailureKind.UNREACHABLE: "check the network route to the server",
    FailureKind.RESOLVE: "check outbound.host and the resolver",
    FailureKind.CLOSED: "the server hung up before greeting: check its logs (client "
    "restrictions, postscreen)",
}
CONNECT_OTHER = "check the server"

AUTH_BEFORE_TLS = (
    "offer AUTH only after TLS: Postfix `smtpd_tls_auth_only = yes` (and "
    "`smtpd_tls_security_level = encrypt` on the submission port); Exchange: "
    "require TLS on the receive connector; Exim: `auth_advertise_hosts = "
    "${if eq{$tls_in_cipher}{}{}{*}}`"
)
NO_STARTTLS = (
    "enable STARTTLS on the server (Postfix: `smtpd_tls_security_level = encrypt` "
    "with smtpd_tls_chain_files); if the server has it, a firewall or middlebox on "
    "the path is stripping it (Cisco 'ESMTP inspection' and similar): switch that off"
)
STARTTLS_REJECTED = "check the server's TLS certificate and key configuration and its log"
STARTTLS_INJECTION = (
    "something on the path between this machine and the server adds SMTP replies in "
    "clear text after the server accepts STARTTLS (a man in the middle, or a broken "
    "firewall/'SMTP inspection' proxy); a client that believed them would report a login "
    "or a delivery the server never made. Find and remove it (run verify from another "
    "network to narrow it down); smtpconn sends no credentials or mail over this path. "
    "If nothing sits on the path, the server itself writes clear text after its 220 "
    "instead of starting TLS: check its TLS configuration and log (Postfix: "
    "smtpd_tls_chain_files, and 'cannot load' in the log)"
)

TLS_VERSION = (
    "enable TLS 1.2 and 1.3 (Postfix: `smtpd_tls_protocols = >=TLSv1.2`, "
    "`smtpd_tls_mandatory_protocols = >=TLSv1.2`)"
)
NO_TLS_VERSION = "enable TLS 1.2 and 1.3 on the server"
OLD_TLS = "enable TLS 1.2 or newer on the server"
NOT_IMPLICIT_TLS = (
    "the server answered in plain text: this is not an implicit-TLS port. Use "
    'security = "starttls" (port 587), or port 465 for implicit TLS'
)
HANDSHAKE = (
    "check the server's TLS configuration and its log: a STARTTLS that cannot complete "
    "usually means the certificate or key cannot be loaded (Postfix: smtpd_tls_chain_files "
    "or smtpd_tls_cert_file/smtpd_tls_key_file, and 'cannot load' in the log) or no "
    "protocol/cipher in common (smtpd_tls_protocols)"
)

INSECURE_CERTIFICATE = "remove --insecure once the server's certificate chains to a trusted CA"
UNTRUSTED_ISSUER = (
    "use a certificate from a public CA and serve the full chain (Postfix: "
    "smtpd_tls_chain_files = key, certificate, intermediates); for a private CA, "
    "give its certificate with --ca-file"
)
SELF_SIGNED = (
    "replace it with a certificate from a public CA (e.g. Let's Encrypt); for a "
    "private CA give its certificate with --ca-file"
)
EXPIRED = "renew the certificate and reload the server"
CLOCK = "check the server's clock and the certificate's dates"
CHAIN_OTHER = "check the certificate chain"
RENEW_NOW = "renew the certificate now"
RENEW_SOON = "renew the certificate before it expires (automate it, e.g. certbot renew)"

LOGIN_TLS_TOO_OLD = "enable TLS 1.2 or newer on the server (see tls.version)"
SEE_MECHANISMS = "see auth.mechanisms"
SECRET_UNREADABLE = "make the secret reference readable where smtpconn runs"
AUTH_BACKEND = "try again later; if it persists, check the server's authentication backend"
LOGIN_CERTIFICATE = (
    "fix the certificate (see tls.certificate / tls.hostname); for a private test "
    "set-up only, --insecure skips certificate checks"
)


def looks_like_old_tls(failure: SmtpFailure) -> bool:
    text = failure.message.lower()
    return any(
        s in text for s in ("unsupported protocol", "no protocols available", "version too low")
    )


def handshake(failure: SmtpFailure, *, implicit: bool) -> str:
    text = failure.message.lower()
    if implicit and (
        "wrong version number" in text or "record layer" in text or "packet length" in text
    ):
        return NOT_IMPLICIT_TLS
    if looks_like_old_tls(failure):
        return OLD_TLS
    return HANDSHAKE


def wrong_hostname(host: str, names: str) -> str:
    return (
        f"install a certificate whose subjectAltName includes {host}, or set "
        f"outbound.host to a name the certificate covers ({names})"
    )


def mechanism_missing(wanted: str) -> str:
    return f"enable AUTH {wanted} on the server after TLS, or set outbound.auth to one it offers"


def credentials(username: str, secret: str) -> str:
    return (
        f"check outbound.username ({username}) and the secret behind "
        f"{secret}; the account must be allowed to send via SMTP AUTH"
    )


def token_refused(username: str, provider: str) -> str:
    """The server refused a token that auth.token found fit: the mailbox side is missing."""
    steps = (
        "in Exchange Online the app's service principal needs Add-MailboxPermission on the "
        f"mailbox {username}, and SMTP AUTH must be on for it (Set-CASMailbox -Identity "
        f"{username} -SmtpClientAuthenticationDisabled $false)"
        if provider == "microsoft365"
        else f"the token must be issued for {username} (outbound.username) and that mailbox "
        "must be allowed to send via SMTP AUTH"
    )
    return f"the token source works but the server refused its token: {steps}"


def no_address(host: str) -> str:
    return f"publish an A/AAAA record for {host}, or correct outbound.host"


def insecure_hostname(host: str) -> str:
    return "remove --insecure once the certificate is valid for " + host


# Causes found by the report-only sessions of ``diagnose`` (see ``causes``).
OLD_VERSIONS_ONLY = (
    "enable TLS 1.2 and 1.3 on the server. Postfix: `smtpd_tls_protocols = >=TLSv1.2` and "
    "`smtpd_tls_mandatory_protocols = >=TLSv1.2` (with OpenSSL 1.1.1 or newer). Exchange: "
    "enable TLS 1.2 in SCHANNEL (HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders"
    "\\SCHANNEL\\Protocols\\TLS 1.2\\Server: Enabled=1, DisabledByDefault=0) and set "
    "SchUseStrongCrypto for .NET, then restart. In general: upgrade the TLS library or the "
    "server software if it cannot speak TLS 1.2"
)
NO_SHARED_CIPHER = (
    "offer modern cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305, and TLS 1.3). "
    "Postfix: remove restrictive `smtpd_tls_ciphers`/`smtpd_tls_mandatory_ciphers`/"
    "`tls_high_cipherlist` overrides (the default `medium` is right) and any "
    "`smtpd_tls_exclude_ciphers` that drops AES-GCM; Exchange: enable the "
    "TLS_ECDHE_*_AES_*_GCM_* suites (Enable-TlsCipherSuite, or the SSL Cipher Suite Order "
    "group policy). In general: the server's cipher list must include ECDHE+AESGCM"
)
CERT_KEY_UNLOADABLE = (
    "the server completes no TLS handshake with any protocol version or cipher: it cannot "
    "use its certificate or private key. Postfix: check `smtpd_tls_chain_files` (or "
    "smtpd_tls_cert_file/smtpd_tls_key_file): the files exist, are readable by Postfix, the "
    "key matches the certificate, and look for 'cannot load' / 'warning: TLS library "
    "problem' in the mail log. Exchange: the certificate bound to SMTP must have its private "
    "key (Get-ExchangeCertificate shows HasPrivateKey) and be enabled for SMTP "
    "(Enable-ExchangeCertificate -Services SMTP). In general: install a certificate with its "
    "key and restart the server"
)
SNI_REFUSED = (
    "the server aborts the handshake when the client names {host} in SNI (it completes one "
    "without SNI): give it a certificate for {host}. Postfix: an entry for {host} in "
    "`tls_server_sni_maps` (key and certificate chain), or a default certificate "
    "(smtpd_tls_chain_files) that covers {host}; Exchange: a certificate whose names include "
    "{host}, set as the receive connector's TlsCertificateName; in general: the server must "
    "serve a certificate for every name clients use for it"
)
SNI_DEPENDS = (
    "the server picks its certificate by SNI: without SNI it sends one for {names}. Make the "
    "certificate for {host} right: Postfix: the entry for {host} in `tls_server_sni_maps` "
    "(or drop it, if the default certificate covers {host}); Exchange: the receive "
    "connector's TlsCertificateName; in general: every name the server is reached by must "
    "map to a valid certificate, and the default one should cover the main name"
)
MISSING_INTERMEDIATE = (
    "serve the full chain: the certificate followed by the intermediate certificate of "
    "{issuer}. Postfix: `smtpd_tls_chain_files = key.pem, fullchain.pem` (or "
    "smtpd_tls_cert_file = fullchain.pem; Let's Encrypt: fullchain.pem, not cert.pem); "
    "Exchange: import the intermediate into the computer's 'Intermediate Certification "
    "Authorities' store and restart MSExchangeTransport; in general: append the "
    "intermediate(s) to the certificate file. If {issuer} is a private root CA instead, give "
    "its certificate with --ca-file"
)
