"""The refresh-token cache: one small JSON file per address, mode 0600, replaced atomically.

A provider may rotate the refresh token on every use (Microsoft does, often); the new one must
replace the old before the old is forgotten, and a crash mid-write must leave one of the two
whole, never a truncated file, or the mailbox has to log in again.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from smtpconn.durable import write_atomically
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind


@dataclass(frozen=True, slots=True)
class CachedLogin:
    refresh_token: str = field(repr=False)
    scope: str | None = None
    account: str | None = None  # the mailbox that logged in, when the provider said


def _relogin_fix(path: Path) -> str:
    return f"run smtpconn oauth login for the address (it writes {path})"


def read_cache(path: Path) -> CachedLogin:
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN,
            f"no refresh token yet: the token cache {path} does not exist",
            fix=_relogin_fix(path),
        ) from None
    except OSError as exc:
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN,
            f"the token cache {path} cannot be read: {exc.strerror}",
            fix="check its owner (the user smtpconn runs as must read and write it)",
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN,
            f"the token cache {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); its refresh token must be treated as leaked",
            fix=f"revoke the login at the provider, delete {path} and log in again",
        )
    try:
        data = json.loads(raw)
        token = data["refresh_token"]
    except (ValueError, KeyError, TypeError):
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN,
            f"the token cache {path} is not a smtpconn token cache",
            fix=_relogin_fix(path),
        ) from None
    if not isinstance(token, str) or not token:
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN,
            f"the token cache {path} holds no refresh token",
            fix=_relogin_fix(path),
        )
    scope = data.get("scope")
    account = data.get("account")
    return CachedLogin(
        token,
        scope if isinstance(scope, str) else None,
        account if isinstance(account, str) else None,
    )


def write_cache(path: Path, login: CachedLogin) -> None:
    """Replace the cache with ``login`` (0600, fsync'ed, renamed, folder fsync'ed)."""
    data = {"refresh_token": login.refresh_token, "scope": login.scope, "account": login.account}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"), mode=0o600)
