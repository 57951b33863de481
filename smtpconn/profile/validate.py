"""Checks of a loaded profile that need the file system: secret references and key files."""

from __future__ import annotations

from pathlib import Path

from smtpconn.errors import UsageError
from smtpconn.profile.model import Profile
from smtpconn.profile.secrets import check_secret_ref, parse_secret_ref


def references_findings(profile: Profile, base_dir: Path) -> tuple[list[str], list[str]]:
    """(findings, warnings): a missing or group/world-readable secret or key file is a finding;
    an unset environment variable only a warning, since the relay may run elsewhere."""
    findings: list[str] = []
    warnings: list[str] = []
    for entry in profile.addresses:
        name = entry.address.display
        if entry.outbound is not None and entry.outbound.secret is not None:
            try:
                warnings.extend(
                    f"{name}: {w}" for w in check_secret_ref(entry.outbound.secret, base_dir)
                )
            except UsageError as exc:
                findings.append(f"{name}: outbound secret: {exc}")
        if entry.dkim is not None and entry.dkim.private_key is not None:
            key = entry.dkim.private_key
            try:
                check_secret_ref(parse_secret_ref(f"file:{key}"), base_dir)
            except UsageError as exc:
                findings.append(f"{name}: DKIM key: {exc}")
    if profile.relay is not None and profile.relay.sink.secret is not None:
        try:
            warnings.extend(
                f"relay.sink: {w}" for w in check_secret_ref(profile.relay.sink.secret, base_dir)
            )
        except UsageError as exc:
            findings.append(f"relay.sink secret: {exc}")
    return findings, warnings
