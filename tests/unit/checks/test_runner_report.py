"""The runner (selection, families, errors, deadline) and the report (JSON, JUnit, exit codes)."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import pytest

from smtpconn.addresses import parse_address
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.report import AddressReport, VerifyReport, junit_xml
from smtpconn.checks.runner import (
    FAMILIES,
    Family,
    Selection,
    catalogue,
    parse_selection,
    run_checks,
)
from smtpconn.errors import ExitCode, UsageError
from smtpconn.profile.model import Mode, SupportAddress, Workflow
from tests.unit.checks.fakedns import FakeResolver, context

ENTRY = SupportAddress(parse_address("support@ex.test"), Mode.OUTBOUND_ONLY, Workflow.FORWARDING)


async def ok_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    return [CheckResult("t.b", Status.PASS, "b"), CheckResult("t.a", Status.WARN, "a", fix="x")]


async def broken_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    raise RuntimeError("boom")


async def slow_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    await asyncio.sleep(30)
    return []


def fam(ids: tuple[str, ...], func: str, **kw: bool) -> Family:
    return Family(ids, f"{__name__}:{func}", **kw)


def test_selection_by_id_and_family() -> None:
    selection = parse_selection(["spf,dkim.key"], ["spf.lookups"])
    assert selection.wants("spf.record") and selection.wants("dkim.key")
    assert not selection.wants("spf.lookups") and not selection.wants("dkim.strength")
    assert not Selection(only=("tls",)).wants("tls-rpt")
    assert parse_selection([], ["tls", "auth"]).wants("mta-sts")
    with pytest.raises(UsageError, match="unknown check"):
        parse_selection(["dkim.nope"], [])


def test_tls_auth_family_is_registered_and_needs_a_server() -> None:
    [tls] = [f for f in FAMILIES if f.target.endswith(":run_tls_auth")]
    # It has landed: a missing module is now a broken install, not something to tolerate.
    assert tls.needs_server and not tls.optional and "auth.login" in tls.ids
    assert tls.opens_sessions


def test_the_catalogue_is_the_one_source_of_ids() -> None:
    import importlib

    from smtpconn.checks import catalogue as ids

    assert [f.ids for f in FAMILIES] == list(ids.FAMILIES.values())
    assert catalogue() == list(ids.ALL) and len(set(ids.ALL)) == len(ids.ALL)
    for family in FAMILIES:
        module = importlib.import_module(family.target.partition(":")[0])
        assert module.IDS is family.ids


def test_help_does_not_load_the_checks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, smtpconn.cli.app; "
        "print(sorted(m for m in sys.modules if m.startswith(('smtpconn.checks', 'dns', 'spf', "
        "'dkim', 'cryptography'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


async def test_results_are_ordered_errors_contained_and_missing_modules_tolerated() -> None:
    families = [
        fam(("t.a", "t.b"), "ok_family"),
        fam(("u.x",), "broken_family"),
        Family(("v.y",), "smtpconn.checks.not_there:run", optional=True),
        fam(("w.z",), "ok_family", needs_server=True),
    ]
    report = await run_checks(
        context(FakeResolver({})), [ENTRY], profile="p.toml", families=families
    )
    checks = report.addresses[0].checks
    assert [c.id for c in checks] == ["t.a", "t.b", "u.x", "w.z"]
    assert checks[2].status is Status.ERROR and "RuntimeError" in checks[2].summary
    assert checks[3].status is Status.SKIP and "forwarding" in checks[3].summary


async def test_deadline_turns_unfinished_checks_into_errors() -> None:
    seen: list[tuple[int, int]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await run_checks(
        context(FakeResolver({})),
        [ENTRY],
        profile="p",
        deadline=0.2,
        families=[fam(("s.x",), "slow_family"), fam(("t.a", "t.b"), "ok_family")],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert loop.time() - started < 5
    by_id = {c.id: c for c in report.addresses[0].checks}
    assert by_id["s.x"].status is Status.ERROR and "deadline" in by_id["s.x"].summary
    assert by_id["t.a"].status is Status.WARN
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)


def report_of(*statuses: Status) -> VerifyReport:
    checks = [
        CheckResult(f"c.{i}", s, f"summary {i}", "detail", "fix it") for i, s in enumerate(statuses)
    ]
    return VerifyReport("p.toml", [AddressReport("support@ex.test", checks)])


@pytest.mark.parametrize(
    ("statuses", "strict", "code"),
    [
        ((Status.PASS, Status.WARN, Status.SKIP), False, ExitCode.OK),
        ((Status.PASS, Status.WARN), True, ExitCode.CHECK_FAILED),
        ((Status.FAIL, Status.ERROR), False, ExitCode.CHECK_FAILED),
        ((Status.ERROR, Status.SKIP), False, ExitCode.COULD_NOT_RUN),
        ((Status.ERROR, Status.ERROR), True, ExitCode.COULD_NOT_RUN),
        # Something was checked and nothing failed: 0, and the output counts what was not.
        ((Status.PASS, Status.ERROR), False, ExitCode.OK),
        ((Status.WARN, Status.ERROR, Status.SKIP), False, ExitCode.OK),
        ((Status.WARN, Status.ERROR), True, ExitCode.CHECK_FAILED),
        ((Status.SKIP, Status.SKIP), False, ExitCode.OK),
    ],
)
def test_exit_codes(statuses: tuple[Status, ...], strict: bool, code: ExitCode) -> None:
    assert report_of(*statuses).exit_code(strict=strict) is code


def test_json_document_shape() -> None:
    doc = json.loads(json.dumps(report_of(Status.PASS, Status.FAIL).to_json()))
    assert set(doc) == {"profile", "insecure", "addresses", "summary"}
    assert doc["summary"] == {"pass": 1, "warn": 0, "fail": 1, "skip": 0, "error": 0}
    assert doc["addresses"][0]["checks"][1] == {
        "id": "c.1",
        "status": "fail",
        "summary": "summary 1",
        "detail": "detail",
        "fix": "fix it",
    }


def test_junit_parses_and_maps_statuses() -> None:
    report = report_of(Status.PASS, Status.WARN, Status.FAIL, Status.SKIP, Status.ERROR)
    root = ET.fromstring(junit_xml(report))
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "5",
        "1",
        "1",
        "1",
    )
    strict = ET.fromstring(junit_xml(report, strict=True))
    assert strict.get("failures") == "2"
    failure = root.find(".//testcase[@name='c.2']/failure")
    assert failure is not None and "fix: fix it" in (failure.text or "")


CALLS: list[str] = []


async def txt_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    CALLS.append("txt")
    await ctx.resolver.query(entry.address.domain, "TXT")
    return [CheckResult("d.txt", Status.PASS, "txt")]


async def session_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    CALLS.append("session")
    return [CheckResult("s.session", Status.PASS, "session")]


async def test_outbound_servers_are_resolved_before_the_first_wave() -> None:
    from smtpconn.profile.model import AuthMechanism, OutboundServer, Security
    from smtpconn.profile.secrets import SecretRef

    server = OutboundServer(
        "mail.ex.test", 587, Security.STARTTLS, AuthMechanism.AUTO, "u", SecretRef("env", "X")
    )
    entries = [
        SupportAddress(
            parse_address(f"support@d{i}.test"),
            Mode.OUTBOUND_ONLY,
            Workflow.AUTHENTICATED,
            outbound=server,
        )
        for i in range(5)
    ]
    fake = FakeResolver({("mail.ex.test", "A"): ["192.0.2.1"]})
    CALLS.clear()
    families = [
        fam(("d.txt",), "txt_family"),
        fam(("s.session",), "session_family", needs_server=True),
    ]
    report = await run_checks(context(fake), entries, profile="p.toml", families=families)
    assert all(r.status is Status.PASS for a in report.addresses for r in a.checks)
    assert list(fake.questions)[:2] == [("mail.ex.test", "A"), ("mail.ex.test", "AAAA")]
    assert CALLS[0] == "session" and fake.questions[("mail.ex.test", "A")] == 1


LOADS: list[tuple[str, int]] = []


class _RecordingFamily(Family):
    """Records, when its module is imported, how many questions had been asked by then."""

    def load(self):  # type: ignore[no-untyped-def]
        LOADS.append((self.target, sum(_FAKE[0].questions.values()) if _FAKE else 0))
        return super().load()


_FAKE: list[FakeResolver] = []


async def test_server_sessions_start_before_the_other_families_are_imported() -> None:
    from smtpconn.profile.model import AuthMechanism, OutboundServer, Security
    from smtpconn.profile.secrets import SecretRef

    server = OutboundServer(
        "mail.ex.test", 587, Security.STARTTLS, AuthMechanism.AUTO, "u", SecretRef("env", "X")
    )
    entry = SupportAddress(
        parse_address("support@d.test"), Mode.OUTBOUND_ONLY, Workflow.AUTHENTICATED, outbound=server
    )
    fake = FakeResolver({("mail.ex.test", "A"): ["192.0.2.1"]})
    _FAKE[:] = [fake]
    LOADS.clear()
    CALLS.clear()
    families = [
        _RecordingFamily(("d.txt",), f"{__name__}:txt_family"),
        _RecordingFamily(("s.session",), f"{__name__}:session_family", needs_server=True),
    ]
    report = await run_checks(context(fake), [entry], profile="p.toml", families=families)
    assert all(r.status is Status.PASS for a in report.addresses for r in a.checks)
    assert [t.rsplit(":", 1)[1] for t, _ in LOADS] == ["session_family", "txt_family"]
    # By the time the other families' modules are imported, the server's addresses are asked.
    assert LOADS[1][1] >= 2


CONTEXT_KEY = ("tls-auth.context", True, True)
CONTEXT_AT_LOAD: list[bool] = []


class _ContextFamily(Family):
    """Records whether the sessions' TLS context was being built when its module was imported."""

    def load(self):  # type: ignore[no-untyped-def]
        CONTEXT_AT_LOAD.append(CONTEXT_KEY in _CTX[0]._memo)
        return super().load()


_CTX: list[CheckContext] = []


@pytest.mark.parametrize("workflow", [Workflow.AUTHENTICATED, Workflow.FORWARDING])
async def test_the_sessions_context_is_built_before_the_session_family_loads(
    workflow: Workflow,
) -> None:
    from smtpconn.profile.model import AuthMechanism, OutboundServer, Security
    from smtpconn.profile.secrets import SecretRef

    server = OutboundServer(
        "mail.ex.test", 587, Security.STARTTLS, AuthMechanism.AUTO, "u", SecretRef("env", "X")
    )
    entry = SupportAddress(
        parse_address("support@d.test"), Mode.OUTBOUND_ONLY, workflow, outbound=server
    )
    ctx = context(FakeResolver({("mail.ex.test", "A"): ["192.0.2.1"]}))
    _CTX[:] = [ctx]
    CONTEXT_AT_LOAD.clear()
    family = _ContextFamily(
        ("s.session",), f"{__name__}:session_family", needs_server=True, opens_sessions=True
    )
    await run_checks(ctx, [entry], profile="p.toml", families=[family])
    # Only an address with an outbound server has a session to build it for.
    assert [workflow is Workflow.AUTHENTICATED] == CONTEXT_AT_LOAD
    assert (CONTEXT_KEY in ctx._memo) is (workflow is Workflow.AUTHENTICATED)
