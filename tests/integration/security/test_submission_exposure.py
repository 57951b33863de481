"""The submission listener. Exposed beyond loopback without AUTH it would let anyone send
as the support addresses, so the relay refuses to start; with the login set by
``smtpconn submission-credentials`` it starts and requires AUTH (over TLS) from everyone."""

from __future__ import annotations

import json
import tomllib

import pytest

from lab.lab import Lab
from smtpconn.errors import UsageError
from smtpconn.relay.runtime import Relay
from tests.conftest import run_smtpconn
from tests.integration.relay.conftest import RelayEnv, started_relay, write_profile

from .rawsmtp import RawSmtp

EXPOSED = "0.0.0.0:0"  # every interface: not a loopback address


def _expose_submission(env: RelayEnv) -> None:
    data = tomllib.loads(env.profile.read_text())
    write_profile(env.profile, data["addresses"], {**data["relay"], "submission_listen": EXPOSED})


def _smtpconn(env: RelayEnv, *args: str) -> tuple[int, str, str]:
    host, port = env.settings.resolvers[0]
    result = run_smtpconn(
        "--profile", str(env.profile), "--resolver", f"{host}:{port}", *args, cwd=env.root
    )
    return result.exit_code, result.stdout, result.stderr


async def test_exposed_submission_without_auth_refuses_to_start(relay_env: RelayEnv) -> None:
    _expose_submission(relay_env)
    before = relay_env.profile.read_bytes()
    relay = Relay.from_profile_file(relay_env.profile, settings=relay_env.settings)
    with pytest.raises(UsageError) as refused:
        await relay.start()  # refused before anything listens
    assert "submission_listen 0.0.0.0:0 is not a loopback address and has no AUTH" in str(
        refused.value.message
    )
    code, _, stderr = _smtpconn(relay_env, "relay", "--check")
    assert code == 2 and "is not a loopback address and has no AUTH" in stderr, stderr
    # The command-line override is checked the same way as the profile.
    data = tomllib.loads(before.decode())
    write_profile(
        relay_env.profile, data["addresses"], {**data["relay"], "submission_listen": "127.0.0.1:0"}
    )
    code, _, stderr = _smtpconn(relay_env, "relay", "--check", "--submission-listen", EXPOSED)
    assert code == 2 and "is not a loopback address and has no AUTH" in stderr, stderr


async def test_credentials_from_the_command_open_an_exposed_listener_with_auth_required(
    lab: Lab, relay_env: RelayEnv
) -> None:
    _expose_submission(relay_env)
    code, stdout, stderr = _smtpconn(
        relay_env, "submission-credentials", "--username", "helpdesk", "--json"
    )
    assert code == 0, stderr
    password = json.loads(stdout)["submission_password"]
    assert password not in relay_env.profile.read_text()
    code, _, stderr = _smtpconn(relay_env, "relay", "--check")
    assert code == 0, stderr

    async with started_relay(relay_env) as relay:
        assert relay.submission_port
        client = await RawSmtp.connect(relay.submission_port)
        try:
            assert (await client.cmd("EHLO attacker.example")).startswith("250")
            # No AUTH, and no AUTH in clear text either.
            assert (await client.cmd("MAIL FROM:<support@good.test>")).startswith("530")
            assert not (await client.login("helpdesk", password)).startswith("235")
            await client.starttls(lab.ca_file)
            assert (await client.cmd("EHLO attacker.example")).startswith("250")
            assert (await client.cmd("MAIL FROM:<support@good.test>")).startswith("530")
            assert (await client.login("helpdesk", password + "x")).startswith("535")
            assert (await client.login("helpdesk", password)).startswith("235")
            assert (await client.cmd("MAIL FROM:<support@good.test>")).startswith("250")
        finally:
            await client.close()
    log = relay_env.log_text()
    assert "event=auth.failed listener=submission" in log
    assert "event=auth.ok listener=submission" in log
    assert password not in log
