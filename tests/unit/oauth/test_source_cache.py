"""The token cache's timing rules (pure: a fake clock and a scripted grant)."""

from __future__ import annotations

from typing import Any

import pytest

from smtpconn.oauth import grants
from smtpconn.oauth.providers import Flow
from smtpconn.oauth.source import AccessToken, TokenSource, TokenSourceSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out: list[str] = []

    def fake(spec: TokenSourceSpec) -> dict[str, Any]:
        out.append(f"t{len(out)}")
        return {"access_token": out[-1], "expires_in": spec.timeout}  # lifetime via timeout

    monkeypatch.setattr(grants, "run_grant", fake)
    return out


def _source(lifetime: float, clock: Clock) -> TokenSource:
    spec = TokenSourceSpec(Flow.CLIENT_CREDENTIALS, "https://x/token", "s", timeout=lifetime)
    return TokenSource(spec, clock=clock)


def test_an_hour_token_is_reused_until_a_minute_before_expiry(issued: list[str]) -> None:
    clock = Clock()
    source = _source(3600, clock)
    assert source.token().value == "t0"
    clock.now += 3600 - 61
    assert source.token().value == "t0"
    clock.now += 2  # 59 s left: less than the margin
    assert source.token().value == "t1"


def test_a_five_second_token_is_reused_but_never_near_expiry(issued: list[str]) -> None:
    clock = Clock()
    source = _source(5, clock)
    first = source.token()
    clock.now += 3
    assert source.token() is first  # 2 s left > a quarter of 5 s
    clock.now += 1  # 1 s left
    assert source.token().value == "t1"


def test_invalidate_forces_a_new_token(issued: list[str]) -> None:
    source = _source(3600, Clock())
    source.token()
    source.invalidate()
    assert source.token().value == "t1"


def test_the_token_value_is_not_in_its_repr() -> None:
    assert "secret-token" not in repr(AccessToken("secret-token", 1.0))
