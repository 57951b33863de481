"""Reading and writing the profile file: parse errors with line and column, atomic locked saves.

Saves follow the classic durable-replace sequence (temporary file in the same folder, fsync,
rename over the old file, fsync of the folder) so a crash at any point leaves either the old or
the new file, never a mix. Read-modify-write runs under an exclusive ``flock`` on a sidecar lock
file, so concurrent ``add-address`` processes serialise instead of losing each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from smtpconn.durable import write_atomically
from smtpconn.errors import ProfileError
from smtpconn.profile import tomlread
from smtpconn.profile.model import Findings, Profile, profile_from_data, profile_to_data

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")

HEADER = (
    "# smtpconn connector profile. Edit with care: secrets are references (env:NAME, file:PATH),\n"
    "# inbound passwords are stored as scrypt hashes only. `smtpconn profile validate` checks it.\n"
)


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    path: Path
    profile: Profile
    exists: bool
    raw: bytes  # the file's bytes as read, to prove a failed operation left it untouched

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def _line_of_key(text: str, key_path: str) -> int | None:
    """Best-effort line number of the last component of a key path, for a friendlier message."""
    key = key_path.rsplit(".", 1)[-1].split("[", 1)[0]
    if not key:
        return None
    pattern = re.compile(
        rf"^\s*\"?{re.escape(key)}\"?\s*=|^\s*\[+[^\]]*\b{re.escape(key)}\]+", re.M
    )
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def format_findings(path: Path, text: str, findings: Findings) -> list[str]:
    lines = []
    for key_path, message in findings.items:
        line = _line_of_key(text, key_path)
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {key_path} {message}")
    return lines


def parse_profile(path: Path, raw: bytes) -> Profile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(
            f"{path}: not UTF-8 text (byte {exc.start})", fix="save the file as UTF-8"
        ) from None
    try:
        data = tomlread.loads(text)
    except tomlread.TOMLDecodeError as exc:
        message = str(exc)
        match = _POSITION.search(message)
        where = f"{path}:{match.group(1)}:{match.group(2)}" if match else str(path)
        reason = _POSITION.sub("", message).strip()
        raise ProfileError(
            f"{where}: not valid TOML: {reason}",
            details=[f"{where}: not valid TOML: {reason}"],
            fix="correct the file by hand (it was not changed); `smtpconn profile validate` re-checks it",
        ) from None
    profile, findings = profile_from_data(data)
    if findings:
        details = format_findings(path, text, findings)
        raise ProfileError(
            "invalid profile:\n  " + "\n  ".join(details),
            fix="correct these keys (the file was not changed)",
            details=details,
        )
    return profile


def load_profile(path: Path, *, must_exist: bool = True) -> LoadedProfile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if must_exist:
            raise ProfileError(
                f"no profile at {path}",
                fix="create one with `smtpconn add-address`, or give the path of an existing profile",
                input="profile",
            ) from None
        return LoadedProfile(path=path, profile=Profile(), exists=False, raw=b"")
    except IsADirectoryError:
        raise ProfileError(f"{path} is a directory", fix="give the path of a .toml file") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    return LoadedProfile(path=path, profile=parse_profile(path, raw), exists=True, raw=raw)


def render_profile(
    profile: Profile, previous: bytes | None = None, *, before: Profile | None = None
) -> str:
    """The profile as TOML. Given the file's current bytes, the administrator's comments and
    layout are kept where the data did not change; the result is checked to mean exactly
    ``profile`` and a clean render is used otherwise. Given also ``before`` (what ``previous``
    means), appending or removing addresses edits the text in place instead of merging it."""
    if previous and before is not None:
        from smtpconn.profile.textedit import edit_text, splice_means

        with contextlib.suppress(Exception):  # any surprise: take the full merge below
            edited = edit_text(previous.decode("utf-8"), before, profile)
            if edited is not None and splice_means(edited):
                return edited.text
    data = profile_to_data(profile)
    if previous:
        try:
            from smtpconn.profile.preserve import merge_text

            merged = merge_text(previous.decode("utf-8"), data)
            if _same(merged, profile):
                return merged
        except Exception:  # any surprise in the merge: fall back to a clean render, never corrupt
            pass
    return clean_text(profile)


def clean_text(profile: Profile) -> str:
    """The profile rendered afresh. The addresses are always ``[[addresses]]`` tables, last
    (tomli_w would write short entries as an inline array, which a later ``add-address``
    could not extend in place)."""
    from smtpconn.profile.textedit import tables_text

    data = profile_to_data(profile)
    data.pop("addresses", None)
    text = HEADER + tomli_w.dumps(data)
    return text + "\n" + tables_text(profile.addresses) if profile.addresses else text


def _same(text: str, profile: Profile) -> bool:
    reread, findings = profile_from_data(tomlread.loads(text))
    return not findings and reread == profile


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for read-modify-write of ``path`` (a sidecar ``.lock`` file, since
    the profile itself is replaced by rename and a lock on the old inode would protect nothing)."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise ProfileError(
            f"folder {path.parent} does not exist",
            fix="create it or choose another profile path",
            input="profile",
        ) from None
    except OSError as exc:
        raise ProfileError(f"cannot lock {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_profile(
    path: Path, profile: Profile, previous: bytes | None = None, *, before: Profile | None = None
) -> None:
    """Write ``profile`` to ``path``; ``previous`` (the bytes it was loaded from) lets comments
    survive, and ``before`` (the profile they mean) lets an add or remove edit them in place.
    Call under ``locked(path)`` when read-modify-writing."""
    write_profile_text(path, render_profile(profile, previous, before=before))


def write_profile_text(path: Path, text: str) -> None:
    """Replace the profile with ``text`` as :func:`render_profile` returned it."""
    try:
        write_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise ProfileError(
            f"cannot write profile {path}: {exc.strerror} (it was not changed)"
        ) from None
