"""The [relay] key declarations: every declared key round-trips through the profile file, unknown
keys are still refused with their line, and each kind refuses a bad value naming the key."""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from smtpconn.errors import ProfileError, UsageError
from smtpconn.profile.keys import (
    LISTEN,
    PASSWORD_HASH,
    PATH,
    POSITIVE_INT,
    PROCESSES,
    SECONDS,
    SIZE,
    TEXT,
    TIMESTAMP,
    DeclaredKey,
    declared_keys,
)
from smtpconn.profile.model import (
    BareNewline,
    Profile,
    RelaySettings,
    profile_from_data,
    profile_to_data,
)
from smtpconn.profile.secrets import hash_password
from smtpconn.profile.store import load_profile, render_profile, save_profile
from smtpconn.relay.config import RelayOverrides, build_config

RELAY_KEYS = list(declared_keys(RelaySettings))


def _other_value(declared: DeclaredKey) -> Any:
    """A value of the key's kind that is not its default."""
    kind, default, name = declared.kind, declared.default, declared.name
    others: dict[object, Any] = {
        TEXT: lambda: f"{name}-value",
        LISTEN: lambda: "127.0.0.9:2999",
        PATH: lambda: f"/srv/{name}",
        SIZE: lambda: 12345,
        POSITIVE_INT: lambda: default + 7,
        PROCESSES: lambda: "auto",
        SECONDS: lambda: default + 1.5,
        PASSWORD_HASH: lambda: hash_password("not the default"),
        TIMESTAMP: lambda: datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
    }
    if kind in others:
        return others[kind]()
    assert kind.name == "BareNewline", f"no test value for kind {kind.name}"
    return next(member for member in BareNewline if member != default)


def _relay_with_every_key_changed() -> RelaySettings:
    values = {declared.name: _other_value(declared) for declared in RELAY_KEYS}
    relay = RelaySettings(**values)
    for declared in RELAY_KEYS:
        assert getattr(relay, declared.name) != declared.default, declared.name
    return relay


def test_every_relay_field_but_the_sink_is_a_declared_key() -> None:
    names = {f.name for f in dataclasses.fields(RelaySettings)} - {"sink"}
    assert {declared.name for declared in RELAY_KEYS} == names


def test_every_declared_relay_key_round_trips_through_the_file(tmp_path: Path) -> None:
    profile = Profile(relay=_relay_with_every_key_changed())
    path = tmp_path / "p.toml"
    save_profile(path, profile)
    written = tomllib.loads(path.read_text())["relay"]
    assert set(written) == {declared.name for declared in RELAY_KEYS} | {"sink"}
    assert load_profile(path).profile == profile


def test_changed_relay_keys_keep_the_administrators_comments(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = 1\n\n[relay]\n# keep me\nspool = "q"  # and me\n')
    loaded = load_profile(path)
    profile = Profile(relay=_relay_with_every_key_changed())
    text = render_profile(profile, loaded.raw)
    assert "# keep me" in text and "# and me" in text
    reread, findings = profile_from_data(tomllib.loads(text))
    assert not findings and reread == profile


def test_defaults_are_written_as_today() -> None:
    written = profile_to_data(Profile(relay=RelaySettings()))["relay"]
    for declared in RELAY_KEYS:
        if declared.default is None:
            assert declared.name not in written
        else:
            expected = declared.kind.write(declared.default)
            assert written[declared.name] == expected, declared.name


def test_empty_or_zero_means_the_default_for_keys_with_one(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = 1\n[relay]\ninbound_listen = ""\nmax_message_size = 0\n')
    relay = load_profile(path).profile.relay
    assert relay == RelaySettings()


def test_an_unknown_relay_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = 1\n\n[relay]\nspool = "q"\ninbound_lisen = "127.0.0.1:25"\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert f"{path}:5: relay.inbound_lisen is not a known key" in caught.value.message


BAD_VALUES: list[tuple[str, str, str]] = [
    # (key, TOML value, what the finding says) - one row per kind at least
    ("hostname", "7", "must be a string, not int"),
    ("inbound_listen", "true", "must be a string, not a boolean"),
    ("spool", "[1]", "must be a string, not list"),
    ("max_message_size", '"25M"', "must be an integer, not str"),
    ("retry_initial", "0", "must be a positive integer"),
    ("max_sessions", "-1", "must be a positive integer"),
    ("idle_timeout", "0", "must be a positive number of seconds"),
    ("data_timeout", "-0.5", "must be a positive number of seconds"),
    (
        "submission_password_hash",
        '"clear-text"',
        "is not a smtpconn scrypt hash; never put a clear password here",
    ),
    ("bare_newline", '"lf"', "'lf' is not one of: reject, normalize"),
    ("processes", "0", 'must be a positive integer or "auto"'),
    ("processes", '"many"', 'must be a positive integer or "auto"'),
    (
        "submission_previous_valid_until",
        "2026-12-07T12:00:00",
        "must be a date-time with a zone, e.g. 2026-12-07T12:00:00Z",
    ),
]

# The key a row's key must come with (set together), written before it.
COMPANIONS = {
    "submission_password_hash": 'submission_username = "hd"\n',
    "submission_previous_valid_until": (
        f'submission_previous_password_hash = "{hash_password("x")}"\n'
    ),
}


def test_the_bad_values_cover_every_kind() -> None:
    covered = {next(d.kind for d in RELAY_KEYS if d.name == name) for name, _, _ in BAD_VALUES}
    assert covered == {declared.kind for declared in RELAY_KEYS}


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_its_key(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    path = tmp_path / "p.toml"
    extra = COMPANIONS.get(name, "")
    path.write_text(f"version = 1\n\n[relay]\n{extra}{name} = {value}\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.details == [f"{path}:{4 + bool(extra)}: relay.{name} {message}"]


def test_the_overrides_are_the_keys_declared_for_the_command_line() -> None:
    names = {f.name for f in dataclasses.fields(RelayOverrides)}
    assert names == {declared.name for declared in RELAY_KEYS if declared.cli}


def test_an_override_wins_over_the_profile(tmp_path: Path) -> None:
    profile = Profile(relay=_relay_with_every_key_changed())
    config = build_config(
        profile, tmp_path, overrides=RelayOverrides(spool="elsewhere", retry_initial=2.5)
    )
    assert config.spool_dir == tmp_path.absolute() / "elsewhere"
    assert config.retry_initial == 2.5
    assert config.retry_window == profile.relay.retry_window  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (RelayOverrides(max_message_size=0), "max_message_size must be a positive number of bytes"),
        (RelayOverrides(retry_initial=0), "retry-initial must be positive"),
        (RelayOverrides(retry_window=-1), "retry-window must be positive"),
        (RelayOverrides(max_connections_per_ip=0), "max-connections-per-ip must be positive"),
    ],
)
def test_a_non_positive_override_is_refused_as_before(
    tmp_path: Path, overrides: RelayOverrides, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        build_config(Profile(), tmp_path, overrides=overrides)
    assert caught.value.message == message
