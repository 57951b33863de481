"""What an outbound server logs in with: its static secret, or an access token from its OAuth
token source. verify, send-test and the relay all ask here, so all three log in the same way.

:class:`Credentials` keeps one token source per address so that its token is cached and
refreshed before expiry; a one-shot caller (verify, send-test) uses :func:`outbound_credential`.
Blocking: a token may need an HTTPS request (async callers use a worker thread).
"""

from __future__ import annotations

import threading
from pathlib import Path

from smtpconn.oauth.source import TokenSource
from smtpconn.profile.model import OutboundServer
from smtpconn.profile.oauth import token_source
from smtpconn.profile.secrets import resolve_secret


class Credentials:
    def __init__(
        self, base_dir: Path, *, ca_file: Path | None = None, insecure: bool = False
    ) -> None:
        self.base_dir = base_dir
        self.ca_file = ca_file
        self.insecure = insecure
        self._sources: dict[tuple[str, str, int, str], TokenSource] = {}
        self._lock = threading.Lock()

    def source(self, server: OutboundServer) -> TokenSource | None:
        """The server's token source (made once per server, user and settings), None when it
        logs in with a static secret."""
        if server.oauth is None:
            return None
        key = (server.username, server.host, server.port, repr(server.oauth))
        with self._lock:
            source = self._sources.get(key)
            if source is None:
                source = token_source(
                    server.oauth,
                    server.username,
                    self.base_dir,
                    ca_file=self.ca_file,
                    insecure=self.insecure,
                )
                self._sources[key] = source
            return source

    def secret(self, server: OutboundServer) -> str:
        """The password or token to log in with now (raises ``UsageError`` for an unreadable
        reference, ``OAuthFailure`` when no token can be had)."""
        source = self.source(server)
        if source is not None:
            return source.token().value
        assert server.secret is not None  # the profile reader requires one or the other
        return resolve_secret(server.secret, self.base_dir)

    def invalidate(self, server: OutboundServer) -> None:
        """Forget the cached token (the server refused it: 535)."""
        source = self.source(server)
        if source is not None:
            source.invalidate()


def outbound_credential(
    server: OutboundServer, base_dir: Path, *, ca_file: Path | None = None, insecure: bool = False
) -> str:
    return Credentials(base_dir, ca_file=ca_file, insecure=insecure).secret(server)


def check_references(server: OutboundServer, base_dir: Path) -> None:
    """Read every reference the server's credential needs, without asking a provider anything
    (the relay's start check: a provider that is down must defer replies, not stop the relay)."""
    if server.oauth is not None:
        token_source(server.oauth, server.username, base_dir)
    elif server.secret is not None:
        resolve_secret(server.secret, base_dir)
