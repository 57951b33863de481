"""The HTTPS session every grant uses: the TLS trust of the rest of smtpconn, a timeout, and
every transport failure turned into an :class:`OAuthFailure` of kind ``unreachable``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter

from smtpconn.net import make_client_tls_context


class _TrustAdapter(HTTPAdapter):
    """``--ca-file`` means what it means everywhere else: the system store plus that file."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def mount_trust(session: Any, ca_file: Path | None, *, insecure: bool = False) -> None:
    """Make ``session`` (a requests session, authlib's included) verify as smtpconn does."""
    context = make_client_tls_context(ca_file, insecure=insecure)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # a client secret goes over it
    session.mount("https://", _TrustAdapter(context))
    if insecure:
        session.verify = False
