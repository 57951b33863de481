"""Secret references and password hashes.

A profile never holds a secret. Credentials we *use* (the customer server's password or OAuth
token) are stored as a reference, ``env:NAME`` or ``file:PATH``, resolved at run time. Credentials
the relay *accepts* (from the customer's server) are stored as a salted scrypt hash only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from smtpconn.errors import UsageError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """``env:NAME`` or ``file:PATH``. ``file:`` paths are relative to the profile's folder."""

    scheme: str  # "env" | "file"
    target: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def file_path(self, base_dir: Path) -> Path:
        path = Path(self.target).expanduser()
        return path if path.is_absolute() else base_dir / path


def parse_secret_ref(value: str) -> SecretRef:
    """Parse a reference; a literal secret is refused with the two forms that are accepted."""
    scheme, sep, target = value.partition(":")
    if sep and scheme == "env" and _ENV_NAME.fullmatch(target):
        return SecretRef("env", target)
    if sep and scheme == "file" and target and "\n" not in target and "\r" not in target:
        return SecretRef("file", target)
    if sep and scheme == "env":
        raise UsageError(
            f"'env:{target}' does not name a valid environment variable",
            fix="use letters, digits and underscores, e.g. env:SMTPCONN_SMTP_PASSWORD",
        )
    # Never echo the value: it may well be the password itself.
    raise UsageError(
        "the secret must be a reference, not the secret itself",
        fix="use env:NAME (an environment variable) or file:PATH (a file readable only by you)",
    )


def check_secret_ref(ref: SecretRef, base_dir: Path) -> list[str]:
    """Check a reference at the time it is recorded. Returns warnings; raises ``UsageError``.

    A ``file:`` reference must exist and be private (the secret would leak otherwise); an
    ``env:`` variable unset *now* is only a warning because the relay may run elsewhere.
    """
    if ref.scheme == "env":
        if ref.target not in os.environ:
            return [
                f"environment variable {ref.target} is not set now; "
                "set it wherever smtpconn verify, send-test or relay run"
            ]
        return []
    path = ref.file_path(base_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(
            f"secret file {path} does not exist",
            fix=f"create it with the secret inside and run chmod 600 {path}",
        ) from None
    except OSError as exc:
        raise UsageError(f"secret file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"secret file {path} is not a regular file", fix="point file: at a file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"secret file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            fix=f"run chmod 600 {path}",
        )
    if not os.access(path, os.R_OK):
        raise UsageError(f"secret file {path} is not readable by this user", fix="check its owner")
    return []


def resolve_secret(ref: SecretRef, base_dir: Path) -> str:
    """Read the secret now (at run time). Trailing newlines of a file are not part of it."""
    if ref.scheme == "env":
        value = os.environ.get(ref.target)
        if value is None:
            raise UsageError(
                f"environment variable {ref.target} (named in the profile) is not set",
                fix=f"export {ref.target}=... before running smtpconn",
            )
        return value
    path = ref.file_path(base_dir)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise UsageError(
            f"secret file {path} (named in the profile) cannot be read: {exc.strerror}",
            fix="create it, readable only by you (chmod 600)",
        ) from None


# scrypt parameters: N=2^14, r=8, p=1 is the interactive-login cost recommended by the scrypt
# paper and costs ~16 MiB and a few tens of ms per check, cheap for a relay, dear for a guesser.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_HASH_RE = re.compile(r"scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def is_password_hash(value: str) -> bool:
    return _HASH_RE.fullmatch(value) is not None


def verify_password(password: str, encoded: str) -> bool:
    match = _HASH_RE.fullmatch(encoded)
    if match is None:
        return False
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    salt = base64.b64decode(match.group(4))
    expected = base64.b64decode(match.group(5))
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=2**26
    )
    return hmac.compare_digest(digest, expected)


def generate_password() -> str:
    """A password for the customer's server to use: 32 URL-safe characters (~190 bits)."""
    return secrets.token_urlsafe(24)
