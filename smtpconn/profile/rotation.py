"""Rotating a login with overlap: a new password whose hash becomes the current one, while the
hash it replaces stays valid until a grace period ends, so the customer's server (or the help
desk) can switch without a moment in which it is refused. A pure function from profile to
profile, like ``edit`` and ``submission``.

Only two hashes are ever kept: rotating again while a rotation is pending revokes the older
previous password at once (the plan says so, so the caller can tell the user).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from smtpconn.addresses import MailAddress, parse_address
from smtpconn.errors import UsageError
from smtpconn.profile.model import InboundCredentials, Profile, RelaySettings
from smtpconn.profile.secrets import generate_password, hash_password

_DURATION = re.compile(r"(\d{1,9})([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_GRACE = timedelta(days=366)


def parse_grace(text: str, *, name: str = "grace") -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or a number of seconds; ``0`` revokes at once."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(
            f"{name} {text!r} is not a duration",
            fix="e.g. 7d, 12h, 30m, 90s, or 0 to revoke the old password at once",
            input=name,
        )
    grace = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if grace > MAX_GRACE:
        raise UsageError(f"{name} {text!r} is longer than a year", fix="use at most 366d")
    return grace


@dataclass(frozen=True, slots=True)
class RotationPlan:
    profile: Profile
    username: str
    password: str  # the new password, to show once
    addresses: tuple[MailAddress, ...]  # every address the login serves (empty: submission)
    previous_valid_until: datetime | None  # None: the old password is revoked now
    revoked_pending_until: datetime | None  # an earlier rotation's grace this one cut short


def plan_rotate_inbound(
    profile: Profile, address_text: str, grace: timedelta, now: datetime
) -> RotationPlan:
    """A new password for the inbound login of ``address_text``. A login shared by several
    addresses (``add-address --inbound-username`` of an existing login) is rotated for all of
    them: its scope is the addresses holding the same user name and hash, and rotating one of
    them alone would split the customer's one login in two."""
    address = parse_address(address_text)
    entry = profile.find(address)
    if entry is None:
        known = ", ".join(e.address.display for e in profile.addresses) or "none"
        raise UsageError(
            f"{address.display} is not in the profile",
            fix=f"addresses in the profile: {known}",
            input="address",
        )
    old = entry.inbound
    if old is None:
        raise UsageError(
            f"{address.display} has no inbound login (only bidirectional addresses of the "
            "authenticated workflow have one)",
            fix="smtpconn list shows each address's inbound user",
            input="address",
        )
    password = generate_password()
    new = _rotated(old.username, old.password_hash, hash_password(password), grace, now)
    shared = [e for e in profile.addresses if e.inbound is not None and _same_login(e.inbound, old)]
    updated = profile
    for other in shared:
        updated = updated.with_address(replace(other, inbound=new))
    return RotationPlan(
        profile=updated,
        username=old.username,
        password=password,
        addresses=tuple(e.address for e in shared),
        previous_valid_until=new.previous_valid_until,
        revoked_pending_until=_cut_short(old.previous_valid_until, old.previous_password_hash, now),
    )


def plan_rotate_submission(profile: Profile, grace: timedelta, now: datetime) -> RotationPlan:
    """A new password for the help desk's submission login, the old one kept for ``grace``."""
    relay = profile.relay
    if relay is None or relay.submission_username is None:
        raise UsageError(
            "no submission login is set",
            fix="set one first with smtpconn submission-credentials --username NAME",
        )
    assert relay.submission_password_hash is not None
    password = generate_password()
    new = _rotated(
        relay.submission_username,
        relay.submission_password_hash,
        hash_password(password),
        grace,
        now,
    )
    updated: RelaySettings = replace(
        relay,
        submission_password_hash=new.password_hash,
        submission_previous_password_hash=new.previous_password_hash,
        submission_previous_valid_until=new.previous_valid_until,
    )
    return RotationPlan(
        profile=replace(profile, relay=updated),
        username=relay.submission_username,
        password=password,
        addresses=(),
        previous_valid_until=new.previous_valid_until,
        revoked_pending_until=_cut_short(
            relay.submission_previous_valid_until, relay.submission_previous_password_hash, now
        ),
    )


def _rotated(
    username: str, old_hash: str, new_hash: str, grace: timedelta, now: datetime
) -> InboundCredentials:
    issued = now.replace(microsecond=0)
    if grace <= timedelta(0):
        return InboundCredentials(username=username, password_hash=new_hash, issued_at=issued)
    # Whole seconds: the profile shows a readable time, and a second more grace harms nobody.
    until = (now + grace).replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)
    return InboundCredentials(
        username=username,
        password_hash=new_hash,
        previous_password_hash=old_hash,
        previous_valid_until=until,
        issued_at=issued,
    )


def _same_login(a: InboundCredentials, b: InboundCredentials) -> bool:
    return a.username == b.username and a.password_hash == b.password_hash


def _cut_short(until: datetime | None, hash_: str | None, now: datetime) -> datetime | None:
    return until if hash_ is not None and until is not None and now < until else None
