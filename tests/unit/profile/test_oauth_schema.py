"""The profile's [addresses.outbound.oauth] table: read, written back unchanged, every broken
rule a finding naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from smtpconn.oauth.providers import Flow, Provider
from smtpconn.profile.model import AuthMechanism, profile_from_data, profile_to_data


def _data(oauth: dict[str, Any], **outbound: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "addresses": [
            {
                "address": "support@contoso.test",
                "mode": "outbound-only",
                "outbound": {
                    "host": "smtp.office365.com",
                    "username": "support@contoso.test",
                    "oauth": oauth,
                    **outbound,
                },
            }
        ],
    }


GOOD = {
    "provider": "microsoft365",
    "flow": "refresh-token",
    "tenant": "contoso.onmicrosoft.com",
    "client_id": "app",
    "token_cache": "/var/lib/smtpconn/support.json",
}


def test_a_token_source_round_trips_and_means_xoauth2() -> None:
    profile, findings = profile_from_data(_data(dict(GOOD)))
    assert not findings, findings.items
    outbound = profile.addresses[0].outbound
    assert outbound is not None and outbound.oauth is not None
    assert outbound.auth is AuthMechanism.XOAUTH2 and outbound.secret is None
    assert outbound.oauth.provider is Provider.MICROSOFT365
    assert outbound.oauth.flow is Flow.REFRESH_TOKEN
    again, findings = profile_from_data(profile_to_data(profile))
    assert not findings and again == profile


@pytest.mark.parametrize(
    ("change", "outbound", "key", "text"),
    [
        ({"tenant": None}, {}, "oauth.tenant", "is required for microsoft365"),
        ({"flow": "service-account"}, {}, "oauth.flow", "not offered by microsoft365"),
        ({"provider": "yahoo"}, {}, "oauth.provider", "yahoo"),
        ({"client_secret": "hunter2"}, {}, "oauth.client_secret", "must be a reference"),
        ({"token_endpoint": "http://x/token"}, {}, "oauth.token_endpoint", "https://"),
        ({"token_cache": None}, {}, "oauth.token_cache", "is required for refresh-token"),
        ({"colour": "blue"}, {}, "oauth.colour", "is not a known key"),
        ({}, {"secret": "env:X"}, "outbound.secret", "cannot be set together with oauth"),
        ({}, {"auth": "plain"}, "outbound.auth", "must be xoauth2"),
        ({"provider": "generic"}, {}, "oauth.token_endpoint", "is required for a generic"),
    ],
)
def test_each_broken_rule_is_a_finding_on_its_key(
    change: dict[str, Any], outbound: dict[str, Any], key: str, text: str
) -> None:
    oauth = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    _profile, findings = profile_from_data(_data(oauth, **outbound))
    matching = [m for path, m in findings.items if path.endswith(key)]
    assert matching and text in matching[0], findings.items
    assert "hunter2" not in repr(findings.items)


def test_without_oauth_the_secret_is_still_required() -> None:
    data = _data({})
    del data["addresses"][0]["outbound"]["oauth"]
    _profile, findings = profile_from_data(data)
    assert ("addresses[0].outbound.secret", "is required but missing") in findings.items
