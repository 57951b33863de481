"""A connector profile pointing at the lab's Postfix, for send-test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lab.lab import Lab

SECRET_ENV = "SMTPCONN_TEST_SEND_SECRET"


@pytest.fixture
def write_profile(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    def write(
        port_name: str = "submission",
        *,
        security: str = "starttls",
        password: str | None = None,
        dkim: bool = True,
        extra: str = "",
    ) -> Path:
        monkeypatch.setenv(SECRET_ENV, password if password is not None else lab.user.password)
        selector, key = lab.dkim_key_for("good.test")
        dkim_table = (
            f'[addresses.dkim]\nselector = "{selector}"\nprivate_key = "{key.path}"\n'
            if dkim
            else ""
        )
        profile = tmp_path / "smtpconn.toml"
        profile.write_text(
            f"""version = 1

[[addresses]]
address = "support@good.test"
mode = "outbound-only"
workflow = "authenticated"

[addresses.outbound]
host = "{lab.server_name}"
port = {lab.ports[port_name]}
security = "{security}"
auth = "auto"
username = "{lab.user.username}"
secret = "env:{SECRET_ENV}"

{dkim_table}
{extra}"""
        )
        profile.chmod(0o600)
        return profile

    return write


@pytest.fixture
def lab_args(lab: Lab) -> list[str]:
    return ["--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5"]
