"""Fixtures for verify's integration tests: profiles for the lab's mail domains, built on the
session-wide ``lab`` fixture (tests/integration/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from lab import zones
from lab.lab import Lab
from smtpconn.addresses import parse_address
from smtpconn.profile.model import (
    AuthMechanism,
    DkimSettings,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef

SECRET_ENV = "SMTPCONN_TEST_VERIFY_SECRET"
SECRET_VALUE = "s3cret-never-shown-4711"


def lab_entry(
    lab: Lab, domain: str, *, workflow: Workflow = Workflow.AUTHENTICATED
) -> SupportAddress:
    """The support address of a lab domain, sending through the lab's mail server, signing with
    the key the lab's tests hold for that domain."""
    d = zones.DOMAINS_BY_NAME[domain]
    dkim = None
    if d.dkim is not None:
        selector, key = lab.dkim_key_for(domain)
        dkim = DkimSettings(selector, key.path)
    outbound = None
    if workflow is Workflow.AUTHENTICATED:
        outbound = OutboundServer(
            zones.MAIL_HOST,
            587,
            Security.STARTTLS,
            AuthMechanism.AUTO,
            "support",
            SecretRef("env", SECRET_ENV),
        )
    return SupportAddress(
        parse_address(d.support_address), Mode.OUTBOUND_ONLY, workflow, outbound, dkim
    )


def profile_toml(lab: Lab, domains: Iterable[str], *, forwarding: Iterable[str] = ()) -> str:
    lines = ["version = 1", ""]
    forwarding = set(forwarding)
    for domain in domains:
        d = zones.DOMAINS_BY_NAME[domain]
        lines += ["[[addresses]]", f'address = "{d.support_address}"', 'mode = "outbound-only"']
        if domain in forwarding:
            lines += ['workflow = "forwarding"', ""]
            continue
        lines += [
            'workflow = "authenticated"',
            "[addresses.outbound]",
            f'host = "{zones.MAIL_HOST}"',
            "port = 587",
            'username = "support"',
            f'secret = "env:{SECRET_ENV}"',
        ]
        if d.dkim is not None:
            selector, key = lab.dkim_key_for(domain)
            lines += ["[addresses.dkim]", f'selector = "{selector}"', f'private_key = "{key.path}"']
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def write_profile(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    monkeypatch.setenv(SECRET_ENV, SECRET_VALUE)

    def write(domains: Iterable[str], **kw: Iterable[str]) -> Path:
        path = tmp_path / "smtpconn.toml"
        path.write_text(profile_toml(lab, domains, **kw))
        path.chmod(0o600)
        return path

    return write
