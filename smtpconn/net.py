"""TLS-context factories shared by checks, send-test and the relay.

One place decides which certificates are trusted, so that ``--ca-file`` means the same thing to
every part of smtpconn (the resolver factories, for ``--resolver``, are
:mod:`smtpconn.dns.resolvers`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from smtpconn.errors import UsageError


def make_client_tls_context(
    ca_file: Path | None = None, *, insecure: bool = False
) -> ssl.SSLContext:
    """A client context trusting the system store plus ``ca_file``.

    The minimum version is left at the library default so that a server speaking only TLS 1.0/1.1
    still completes a handshake and ``tls.version`` can *report* it instead of failing blindly;
    callers that send AUTH or mail raise ``minimum_version`` to TLS 1.2 themselves.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"--ca-file {ca_file} cannot be used: {exc}",
                fix="give a PEM file of one or more CA certificates",
            ) from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The relay's listener context: TLS 1.2+ only, since AUTH is accepted over it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot load the relay's TLS certificate {cert_file} / key {key_file}: {exc}",
            fix="set relay.tls_cert and relay.tls_key to PEM files (certificate chain and its key)",
        ) from None
    return context
