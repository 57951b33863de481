"""OAuth2 token sources for SMTP XOAUTH2: the four grants a mail relay needs, behind one object.

A :class:`~smtpconn.oauth.source.TokenSource` hands out an access token, caching it until shortly
before it expires and fetching a new one with its grant (client credentials, a refresh token kept
in a 0600 cache file, or a Google service account's JWT bearer assertion); ``device.py`` runs the
device-code login that fills the cache. The grants themselves are authlib's: this package chooses
the endpoints and scopes (``providers.py``), keeps the cache durable and turns every way a grant
can go wrong into one :class:`~smtpconn.oauth.errors.OAuthFailure` whose ``kind`` tells "we could
not reach the provider" from "the provider said no".

Beside ``smtpconn.smtp`` in the layers: it never learns the profile's schema (the profile turns
its entries into a :class:`~smtpconn.oauth.source.TokenSourceSpec`), and no token or secret it
holds is ever part of a ``repr`` or a message.
"""

__all__ = ["cache", "claims", "device", "errors", "grants", "http", "providers", "source"]
