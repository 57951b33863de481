"""Fixtures for verify's integration tests: profiles for the lab's mail domains, built on the
session-wide ``lab`` fixture (tests/integration/conftest.py), and ``scenario_dns``: a second NSD
with misconfigurations the lab does not have (untuned_zones.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lab import zones
from lab.lab import Lab
from lab.mta_sts import Response, policy_text
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

if TYPE_CHECKING:
    from tests.integration.verify.untuned_zones import ScenarioNsd

SECRET_ENV = "SMTPCONN_TEST_VERIFY_SECRET"
SECRET_VALUE = "s3cret-never-shown-4711"
#: dns.blocklist asks the lab's list (lab/zones.py), never the public ones.
LAB_BLOCKLISTS = (f"{zones.BLOCKLIST}={zones.BLOCKLIST_DELIST}",)


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


@dataclass(frozen=True)
class ScenarioDns:
    nsd: ScenarioNsd
    ed25519_key: Path  # private key published at sel2048._domainkey.u-ed25519.test


@pytest.fixture(scope="module")
def scenario_dns(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioDns]:
    """A second NSD with the lab's zones plus the untuned misconfigurations (untuned_zones);
    stopped at the end of the module."""
    from tests.integration.verify.untuned_zones import ScenarioNsd, ed25519_key, scenario_zones

    # NSD runs as root without a chroot here, but keep the lab's rule: a directory its own
    # readers can reach, never pytest's 0700 tmp dir.
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-untuned-", dir="/tmp"))
    key_path, ed_public = ed25519_key(directory)
    public = {name: key.public_der for name, key in lab.dkim_keys.items()}
    nsd = ScenarioNsd(directory / "dns", public, scenario_zones(public, ed_public))
    nsd.start()
    # Zones whose MX is not the lab's mail server get a policy that names their MX hosts.
    assert lab.mta_sts is not None
    policies = {
        "mta-sts.u-mx11.test": policy_text("*.u-mx11.test"),
        "mta-sts.u-mxcname.test": policy_text("mx.u-mxcname.test"),
    }
    lab.mta_sts.responses.update({h: Response(p) for h, p in policies.items()})
    try:
        yield ScenarioDns(nsd, key_path)
    finally:
        for host in policies:
            lab.mta_sts.responses.pop(host, None)
        nsd.stop()
        shutil.rmtree(directory, ignore_errors=True)
