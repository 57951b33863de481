"""Setting and clearing the submission listener's login (``[relay] submission_username`` /
``submission_password_hash``): a pure function from profile to profile, like ``edit``.

The password is generated here (the same generator as inbound passwords) and only its scrypt hash
goes into the profile; the caller shows it once or writes it to a private file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smtpconn.profile.edit import check_username
from smtpconn.profile.model import Profile, RelaySettings
from smtpconn.profile.secrets import generate_password, hash_password


@dataclass(frozen=True, slots=True)
class SubmissionPlan:
    profile: Profile
    username: str | None  # the login after the change (None: removed / none)
    previous_username: str | None  # the login it replaces or removes
    password: str | None  # the new password, to show once; None when removing

    @property
    def changed(self) -> bool:
        return self.username is not None or self.previous_username is not None


def plan_set_submission(
    profile: Profile, username: str, *, username_name: str = "username"
) -> SubmissionPlan:
    """A new random password for ``username``; any previous submission login stops working.
    ``username_name`` is how the caller's messages name the user name (the CLI: its option)."""
    check_username(username, username_name)
    password = generate_password()
    relay = profile.relay or RelaySettings()
    updated = replace(
        relay, submission_username=username, submission_password_hash=hash_password(password)
    )
    return SubmissionPlan(
        profile=replace(profile, relay=updated),
        username=username,
        previous_username=relay.submission_username,
        password=password,
    )


def plan_remove_submission(profile: Profile) -> SubmissionPlan:
    """No AUTH on the submission listener (the relay then only starts on a loopback address)."""
    relay = profile.relay
    if relay is None or relay.submission_username is None:
        return SubmissionPlan(profile, None, None, None)
    updated = replace(relay, submission_username=None, submission_password_hash=None)
    return SubmissionPlan(
        profile=replace(profile, relay=updated),
        username=None,
        previous_username=relay.submission_username,
        password=None,
    )
