"""Each grant end to end: smtpconn.oauth (authlib over HTTPS) against the lab authorization
server. Nothing is mocked: real TLS with the lab CA, real token requests, real cache files."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from lab.oauth import SMTP_AUDIENCE, SMTP_SCOPE, LabClient, LabOAuthServer
from smtpconn.oauth import device
from smtpconn.oauth.cache import CachedLogin, read_cache, write_cache
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.providers import Flow
from smtpconn.oauth.source import TokenSource, TokenSourceSpec, parse_service_account_key

MAILBOX = "support@contoso.test"
CLIENT_SECRET = "lab-client-secret-value"


def _spec(server: LabOAuthServer, ca_file: Path, flow: Flow, **extra: object) -> TokenSourceSpec:
    return TokenSourceSpec(
        flow=flow,
        token_endpoint=server.token_endpoint,
        device_endpoint=server.device_endpoint,
        scope=SMTP_SCOPE,
        subject=MAILBOX,
        ca_file=ca_file,
        timeout=5,
        **extra,  # type: ignore[arg-type]
    )


def test_client_credentials_token_is_active_for_smtp_and_cached(
    oauth_server: LabOAuthServer, ca_file: Path
) -> None:
    oauth_server.add_client(LabClient("app", CLIENT_SECRET))
    source = TokenSource(
        _spec(
            oauth_server,
            ca_file,
            Flow.CLIENT_CREDENTIALS,
            client_id="app",
            client_secret=CLIENT_SECRET,
        )
    )
    token = source.token()
    assert oauth_server.is_active(token.value)
    assert source.token() is token  # cached while far from expiry
    assert oauth_server.state.grants == ["client_credentials"]
    assert CLIENT_SECRET not in repr(source.spec) and token.value not in repr(token)


def test_wrong_client_secret_is_refused_with_the_fix(
    oauth_server: LabOAuthServer, ca_file: Path
) -> None:
    oauth_server.add_client(LabClient("app", CLIENT_SECRET))
    source = TokenSource(
        _spec(
            oauth_server, ca_file, Flow.CLIENT_CREDENTIALS, client_id="app", client_secret="wrong"
        )
    )
    with pytest.raises(OAuthFailure) as failure:
        source.token()
    assert failure.value.kind is OAuthFailureKind.REFUSED
    assert failure.value.error == "invalid_client"
    assert failure.value.fix and "client secret" in failure.value.fix


def test_unreachable_endpoint_is_not_a_refusal(oauth_server: LabOAuthServer, ca_file: Path) -> None:
    oauth_server.add_client(LabClient("app", CLIENT_SECRET))
    spec = _spec(oauth_server, ca_file, Flow.CLIENT_CREDENTIALS, client_id="app",
                 client_secret=CLIENT_SECRET)  # fmt: skip
    oauth_server.stop()
    with pytest.raises(OAuthFailure) as failure:
        TokenSource(spec).token()
    assert failure.value.kind is OAuthFailureKind.UNREACHABLE


def test_untrusted_certificate_is_refused(oauth_server: LabOAuthServer, tmp_path: Path) -> None:
    """Without the lab CA the provider cannot be told from an impostor: no secret is sent."""
    oauth_server.add_client(LabClient("app", CLIENT_SECRET))
    spec = TokenSourceSpec(
        flow=Flow.CLIENT_CREDENTIALS, token_endpoint=oauth_server.token_endpoint, scope="smtp",
        client_id="app", client_secret=CLIENT_SECRET, timeout=5,
    )  # fmt: skip
    with pytest.raises(OAuthFailure) as failure:
        TokenSource(spec).token()
    assert failure.value.kind is OAuthFailureKind.UNREACHABLE
    assert oauth_server.state.grants == []


def test_device_code_login_then_refresh_with_rotation_written_back_atomically(
    oauth_server: LabOAuthServer, ca_file: Path, tmp_path: Path
) -> None:
    oauth_server.add_client(LabClient("public-app"))
    oauth_server.state.rotate_refresh_tokens = True
    cache = tmp_path / "tokens" / "support.json"
    spec = _spec(oauth_server, ca_file, Flow.REFRESH_TOKEN, client_id="public-app",
                 cache_path=cache)  # fmt: skip
    login = device.start(spec)
    assert login.user_code in oauth_server.pending_user_codes()
    # The user approves in a browser a moment later; the poll must wait for it.
    threading.Timer(1.5, oauth_server.approve, (login.user_code, MAILBOX)).start()
    device.wait(spec, login, account=MAILBOX)
    assert "authorization_pending" not in json.dumps(oauth_server.state.grants)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    first = read_cache(cache)
    assert first.account == MAILBOX

    source = TokenSource(spec)
    token = source.token()
    assert oauth_server.is_active(token.value)
    rotated = read_cache(cache)
    assert rotated.refresh_token != first.refresh_token  # the provider rotated it: kept
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [p.name for p in cache.parent.iterdir()] == ["support.json"]  # no temp file left
    source.invalidate()
    assert oauth_server.is_active(source.token().value)  # the rotated one works


def test_revoked_refresh_token_says_log_in_again(
    oauth_server: LabOAuthServer, ca_file: Path, tmp_path: Path
) -> None:
    oauth_server.add_client(LabClient("public-app"))
    cache = tmp_path / "support.json"
    spec = _spec(oauth_server, ca_file, Flow.REFRESH_TOKEN, client_id="public-app",
                 cache_path=cache)  # fmt: skip
    login = device.start(spec)
    oauth_server.approve(login.user_code, MAILBOX)
    device.wait(spec, login, sleep=lambda _s: None)
    oauth_server.revoke_refresh_tokens(MAILBOX)
    with pytest.raises(OAuthFailure) as failure:
        TokenSource(spec).token()
    assert failure.value.error == "invalid_grant"
    assert failure.value.fix and "smtpconn oauth login" in failure.value.fix
    assert read_cache(cache).refresh_token not in str(failure.value)


def test_no_cache_yet_names_oauth_login(ca_file: Path, tmp_path: Path) -> None:
    spec = TokenSourceSpec(Flow.REFRESH_TOKEN, "https://127.0.0.1:9/token", "smtp",
                           client_id="x", cache_path=tmp_path / "none.json")  # fmt: skip
    with pytest.raises(OAuthFailure) as failure:
        TokenSource(spec).token()
    assert failure.value.kind is OAuthFailureKind.NOT_LOGGED_IN
    assert failure.value.fix and "oauth login" in failure.value.fix


def test_world_readable_cache_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    write_cache(cache, CachedLogin("rt-value"))
    os.chmod(cache, 0o644)
    with pytest.raises(OAuthFailure) as failure:
        read_cache(cache)
    assert "readable by group or others" in failure.value.message
    assert "rt-value" not in str(failure.value)


def test_service_account_jwt_bearer_acts_for_the_mailbox(
    oauth_server: LabOAuthServer, ca_file: Path
) -> None:
    key = parse_service_account_key(
        oauth_server.add_service_account("relay@proj.iam.gserviceaccount.test"), "key.json"
    )
    source = TokenSource(_spec(oauth_server, ca_file, Flow.SERVICE_ACCOUNT, service_key=key))
    token = source.token()
    assert oauth_server.is_active(token.value)
    assert oauth_server.state.access[token.value].subject == MAILBOX
    assert oauth_server.state.access[token.value].audience == SMTP_AUDIENCE


def test_service_account_without_delegation_is_refused(
    oauth_server: LabOAuthServer, ca_file: Path
) -> None:
    key = parse_service_account_key(
        oauth_server.add_service_account("nodwd@proj.test", delegated=False), "key.json"
    )
    with pytest.raises(OAuthFailure) as failure:
        TokenSource(_spec(oauth_server, ca_file, Flow.SERVICE_ACCOUNT, service_key=key)).token()
    assert failure.value.error == "unauthorized_client"


def test_short_lifetime_tokens_are_refreshed_before_they_expire(
    oauth_server: LabOAuthServer, ca_file: Path
) -> None:
    oauth_server.add_client(LabClient("app", CLIENT_SECRET))
    oauth_server.state.lifetime = 3
    source = TokenSource(
        _spec(
            oauth_server,
            ca_file,
            Flow.CLIENT_CREDENTIALS,
            client_id="app",
            client_secret=CLIENT_SECRET,
        )
    )
    deadline = time.time() + 5
    while time.time() < deadline:
        token = source.token(margin=1)
        # Never handed out with less than the margin left: still valid at the server.
        assert oauth_server.is_active(token.value)
        time.sleep(0.2)
    assert oauth_server.state.grants.count("client_credentials") >= 2
