"""The SMTP libraries' versions with known injection bugs are never admitted.

* aiosmtpd < 1.4.5: ``\\n.\\r\\n`` ends DATA early and smuggles a second message
  (CVE-2024-27305); < 1.4.6: commands pipelined behind STARTTLS run inside TLS (CVE-2024-34083).
* aiosmtplib < 5.1.1: CR/LF in MAIL/RCPT addresses injects commands; 5.1.3 also refuses
  whitespace and angle brackets in them.

Both what pyproject.toml declares and what is installed here are checked: the first protects
users who ``pip install``, the second this test run and the relay it exercises.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
FLOORS = {"aiosmtpd": Version("1.4.6"), "aiosmtplib": Version("5.1.3")}


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = (Requirement(r) for r in project["dependencies"])
    return {r.name.lower(): r for r in requirements}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_pyproject_admits_no_version_below_the_floor(name: str) -> None:
    requirement = _declared()[name]
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert floors and max(floors) >= FLOORS[name], (
        f"{requirement} admits {name} versions below {FLOORS[name]}"
    )
    # And concretely: the last vulnerable release is refused.
    assert not requirement.specifier.contains(_just_below(FLOORS[name]), prereleases=True)


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_installed_version_is_not_below_the_floor(name: str) -> None:
    installed = Version(version(name))
    assert installed >= FLOORS[name], (
        f"{name} {installed} is installed; {FLOORS[name]} or newer is required (older ones have SMTP injection bugs): "
        f'pip install "{name}>={FLOORS[name]}"'
    )


def _just_below(floor: Version) -> str:
    major, minor, micro = floor.release[:3]
    return f"{major}.{minor}.{micro - 1}" if micro else f"{major}.{minor - 1}.99"
