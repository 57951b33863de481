"""The result of a verify run and its machine forms: the ``--json`` document (profile, insecure,
per address its checks, a summary of counts by status) and JUnit XML for CI systems, plus the
exit code the run implies. Rendering for people lives in the CLI layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smtpconn.checks.model import CheckResult, Status
from smtpconn.errors import ExitCode


@dataclass
class AddressReport:
    address: str
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class VerifyReport:
    profile: str
    addresses: list[AddressReport]
    insecure: bool = False

    def results(self) -> list[CheckResult]:
        return [c for a in self.addresses for c in a.checks]

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for result in self.results():
            counts[result.status.value] += 1
        return counts

    def incomplete(self) -> int:
        """How many checks could not be completed (``error``: could not tell)."""
        return sum(1 for r in self.results() if r.status is Status.ERROR)

    def exit_code(self, *, strict: bool = False) -> ExitCode:
        """1 when a check failed (or, with ``strict``, warned); 3 when no check reached a
        definite result (every result that is not ``skip`` is ``error``: the resolver or the
        server could not be reached at all); else 0.

        A run where *some* checks are ``error`` and none failed exits 0: what was seen is fine.
        It is not "all good" either, so every output says how many checks could not be completed
        (``summary.error`` in JSON, a line under the tables, ``<error>`` cases in JUnit)."""
        statuses = [r.status for r in self.results()]
        if Status.FAIL in statuses or (strict and Status.WARN in statuses):
            return ExitCode.CHECK_FAILED
        ran = [s for s in statuses if s is not Status.SKIP]
        if ran and all(s is Status.ERROR for s in ran):
            return ExitCode.COULD_NOT_RUN
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "insecure": self.insecure,
            "addresses": [
                {"address": a.address, "checks": [c.to_json() for c in a.checks]}
                for a in self.addresses
            ],
            "summary": self.summary(),
        }


def junit_xml(report: VerifyReport, *, strict: bool = False) -> str:
    """One testsuite per address, one testcase per check: fail -> <failure>, error -> <error>,
    skip -> <skipped>; a warning passes (with its text in system-out) unless ``strict``."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="smtpconn verify")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for address in report.addresses:
        suite = ET.SubElement(root, "testsuite", name=address.address)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for check in address.checks:
            counts["tests"] += 1
            case = ET.SubElement(
                suite, "testcase", classname=address.address, name=check.id, time="0"
            )
            text = "\n".join(
                part
                for part in (check.summary, check.detail, f"fix: {check.fix}" if check.fix else "")
                if part
            )
            failed = check.status is Status.FAIL or (strict and check.status is Status.WARN)
            if failed:
                counts["failures"] += 1
                node = ET.SubElement(
                    case, "failure", message=check.summary, type=check.status.value
                )
                node.text = text
            elif check.status is Status.ERROR:
                counts["errors"] += 1
                node = ET.SubElement(case, "error", message=check.summary, type="error")
                node.text = text
            elif check.status is Status.SKIP:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=check.summary)
            elif check.status is Status.WARN:
                ET.SubElement(case, "system-out").text = f"WARNING: {text}"
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
