"""Rotation with overlap as pure profile logic: the grace parser, both hashes in the profile, the
old one scoped and timed, shared logins rotated together, and what the relay accepts when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtpconn.errors import UsageError
from smtpconn.profile.model import profile_from_data, profile_to_data
from smtpconn.profile.rotation import parse_grace, plan_rotate_inbound, plan_rotate_submission
from smtpconn.profile.secrets import hash_password, verify_password
from smtpconn.profile.submission import plan_set_submission
from smtpconn.relay.config import Credential, build_config

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
OLD_HASH = hash_password("old-password")
OTHER_HASH = hash_password("other-password")


def _entry(address: str, username: str, hash_: str) -> dict:  # type: ignore[type-arg]
    return {
        "address": address,
        "mode": "bidirectional",
        "outbound": {"host": "m.example.com", "username": "u", "secret": "env:X"},
        "inbound": {"username": username, "password_hash": hash_},
    }


def _profile():  # type: ignore[no-untyped-def]
    profile, findings = profile_from_data(
        {
            "version": 1,
            "addresses": [
                _entry("support@example.com", "cust", OLD_HASH),
                _entry("help@example.com", "cust", OLD_HASH),  # the same login, shared
                _entry("sales@other.test", "other", OTHER_HASH),
            ],
        }
    )
    assert not findings
    return profile


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * 86400),
        ("12h", 43200),
        ("30m", 1800),
        ("45s", 45),
        ("90", 90),
        ("2W", 1209600),
        ("0", 0),
    ],
)
def test_grace_durations(text: str, seconds: int) -> None:
    assert parse_grace(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "1.5h", "7y", "d", "400d", "9999999999"])
def test_grace_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(UsageError):
        parse_grace(text)


def test_rotation_keeps_the_old_hash_until_the_grace_ends_for_every_address_of_the_login() -> None:
    plan = plan_rotate_inbound(_profile(), "support@Example.com", timedelta(days=7), NOW)
    assert [a.ascii for a in plan.addresses] == ["support@example.com", "help@example.com"]
    assert plan.previous_valid_until == NOW + timedelta(days=7)
    rotated = [e.inbound for e in plan.profile.addresses]
    assert rotated[0] == rotated[1]  # still one login
    assert rotated[0] is not None and verify_password(plan.password, rotated[0].password_hash)
    assert rotated[0].previous_password_hash == OLD_HASH
    assert rotated[2] is not None and rotated[2].password_hash == OTHER_HASH  # untouched
    # Written and read back: the same profile (a zone-aware TOML date-time).
    again, findings = profile_from_data(profile_to_data(plan.profile))
    assert not findings and again == plan.profile


def test_the_relay_accepts_both_during_the_grace_and_only_the_new_after() -> None:
    plan = plan_rotate_inbound(_profile(), "support@example.com", timedelta(hours=1), NOW)
    config = build_config(plan.profile, Path("."))
    new_hash = plan.profile.addresses[0].inbound.password_hash  # type: ignore[union-attr]
    scope = frozenset({"support@example.com", "help@example.com"})
    during = config.inbound_credentials(NOW + timedelta(minutes=59))
    assert Credential("cust", new_hash, scope) in during
    assert Credential("cust", OLD_HASH, scope, previous=True) in during
    after = config.inbound_credentials(NOW + timedelta(hours=1))
    assert Credential("cust", new_hash, scope) in after
    assert all(c.password_hash != OLD_HASH for c in after)


def test_a_previous_hash_keeps_the_scope_of_the_addresses_rotating_from_it() -> None:
    # help@ was hand-edited to keep the old login; support@ rotated: the old password covers
    # both (current for help@, previous for support@), the new one only support@.
    profile = _profile()
    plan = plan_rotate_inbound(profile, "support@example.com", timedelta(days=1), NOW)
    mixed = plan.profile.with_address(profile.addresses[1])
    credentials = build_config(mixed, Path(".")).inbound_credentials(NOW)
    old = next(c for c in credentials if c.password_hash == OLD_HASH)
    assert old.scope == frozenset({"support@example.com", "help@example.com"}) and old.previous
    new = next(c for c in credentials if c.username == "cust" and c.password_hash != OLD_HASH)
    assert new.scope == frozenset({"support@example.com"}) and not new.previous


def test_grace_zero_revokes_at_once_and_a_second_rotation_cuts_the_first_short() -> None:
    first = plan_rotate_inbound(_profile(), "support@example.com", timedelta(days=7), NOW)
    second = plan_rotate_inbound(first.profile, "support@example.com", timedelta(0), NOW)
    assert second.previous_valid_until is None
    assert second.revoked_pending_until == NOW + timedelta(days=7)
    inbound = second.profile.addresses[0].inbound
    assert inbound is not None and inbound.previous_password_hash is None
    hashes = {
        c.password_hash for c in build_config(second.profile, Path(".")).inbound_credentials(NOW)
    }
    assert hashes == {inbound.password_hash, OTHER_HASH}


def test_rotation_refuses_unknown_and_login_less_addresses() -> None:
    profile = _profile()
    with pytest.raises(UsageError, match="not in the profile"):
        plan_rotate_inbound(profile, "nobody@example.com", timedelta(days=1), NOW)
    with pytest.raises(UsageError):
        plan_rotate_inbound(profile, "not an address", timedelta(days=1), NOW)
    forward, _ = profile_from_data(
        {
            "version": 1,
            "addresses": [
                {"address": "f@example.com", "mode": "outbound-only", "workflow": "forwarding"}
            ],
        }
    )
    with pytest.raises(UsageError, match="no inbound login"):
        plan_rotate_inbound(forward, "f@example.com", timedelta(days=1), NOW)
    with pytest.raises(UsageError, match="no submission login"):
        plan_rotate_submission(profile, timedelta(days=1), NOW)


def test_submission_rotation_keeps_the_old_password_for_the_grace() -> None:
    first = plan_set_submission(_profile(), "helpdesk")
    plan = plan_rotate_submission(first.profile, timedelta(minutes=10), NOW)
    config = build_config(plan.profile, Path("."))
    during = config.submission_credentials(NOW + timedelta(minutes=9))
    assert [c.previous for c in during] == [False, True]
    assert verify_password(first.password or "", during[1].password_hash)
    assert verify_password(plan.password, during[0].password_hash)
    assert [c.previous for c in config.submission_credentials(NOW + timedelta(minutes=10))] == [
        False
    ]
    again, findings = profile_from_data(profile_to_data(plan.profile))
    assert not findings and again == plan.profile


@pytest.mark.parametrize(
    ("inbound", "finding"),
    [
        ({"previous_password_hash": OLD_HASH}, "set together"),
        ({"previous_valid_until": NOW}, "set together"),
        ({"previous_password_hash": "clear", "previous_valid_until": NOW}, "scrypt hash"),
        (
            {"previous_password_hash": OLD_HASH, "previous_valid_until": NOW.replace(tzinfo=None)},
            "with a zone",
        ),
        ({"previous_password_hash": OLD_HASH, "previous_valid_until": "2026-12-01"}, "date-time"),
    ],
)
def test_a_hand_edited_rotation_is_refused_with_its_key(inbound: dict, finding: str) -> None:  # type: ignore[type-arg]
    entry = _entry("support@example.com", "cust", OTHER_HASH)
    entry["inbound"].update(inbound)
    _, findings = profile_from_data({"version": 1, "addresses": [entry]})
    assert any(finding in message for _, message in findings.items), findings.items
    assert all(path.startswith("addresses[0].inbound.previous") for path, _ in findings.items)


def test_submission_previous_keys_go_together() -> None:
    _, findings = profile_from_data(
        {"version": 1, "relay": {"submission_previous_password_hash": OLD_HASH}}
    )
    assert any("set together" in m for _, m in findings.items)
