"""Every record fix verify prints, proven by publishing it, on a generated corpus.

Hundreds of zones (generated_zones.py: SPF, DMARC, DKIM and MX defects combined) are served by
one NSD. One verify run covers every address; then, round after round, each case publishes the
fix of its first unproven non-pass result that names a record (all cases in one reload), and one
verify run over the changed cases must show: that check passes, no other check got worse, and an
SPF record that was published authorises the outbound server (spf.authorizes passes).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.lab import Lab
from lab.zones import Record
from smtpconn.addresses import parse_address
from smtpconn.checks import catalogue
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.runner import Selection
from smtpconn.checks.verify import verify_entries
from smtpconn.dns.resolvers import parse_resolver
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
from smtpconn.settings import Settings
from tests.integration.verify.conftest import SECRET_ENV
from tests.integration.verify.generated_zones import (
    SERVER,
    Case,
    Published,
    apply_fix,
    corpus_zones,
    fix_records,
    generate_cases,
)
from tests.integration.verify.untuned_zones import ScenarioNsd

#: The DNS record checks; MTA-STS and TLS-RPT (not generated here) and the server session are not
#: run.
SELECTION = Selection(skip=("tls", "auth", "mta-sts", "tls-rpt", "dns.blocklist"))
#: How bad a status is, for "no other check got worse". A skip hides a verdict: leaving one is
#: never a regression, reaching one from a verdict is as bad as an error.
RANK = {Status.PASS: 0, Status.WARN: 1, Status.SKIP: 2, Status.ERROR: 2, Status.FAIL: 3}
MAX_ROUNDS = 8


@dataclass
class Corpus:
    nsd: ScenarioNsd
    cases: list[Case]
    entries: dict[str, SupportAddress]  # address -> entry
    settings: Settings


@pytest.fixture(scope="module")
def corpus(lab: Lab) -> Iterator[Corpus]:
    cases = generate_cases()
    public = {name: key.public_der for name, key in lab.dkim_keys.items()}
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-corpus-", dir="/tmp"))
    nsd = ScenarioNsd(directory / "dns", public, corpus_zones(cases, public))
    nsd.start()
    key = lab.dkim_keys["main"].path
    outbound = OutboundServer(
        SERVER, 587, Security.STARTTLS, AuthMechanism.AUTO, "support", SecretRef("env", SECRET_ENV)
    )
    entries = {
        c.address: SupportAddress(
            parse_address(c.address),
            Mode.OUTBOUND_ONLY,
            Workflow.AUTHENTICATED,
            outbound,
            DkimSettings("sel2048", key),
        )
        for c in cases
    }
    settings = Settings(resolvers=(parse_resolver(nsd.address),), timeout=5, ca_file=lab.ca_file)
    try:
        yield Corpus(nsd, cases, entries, settings)
    finally:
        nsd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def verify(corpus: Corpus, cases: list[Case]) -> dict[str, dict[str, CheckResult]]:
    """address -> check id -> result, from one library call for all ``cases``."""
    entries = [corpus.entries[c.address] for c in cases]
    report = asyncio.run(
        verify_entries(corpus.settings, Path("/"), entries, selection=SELECTION, deadline=300)
    )
    return {a.address: {r.id: r for r in a.checks} for a in report.addresses}


@dataclass
class Proof:
    """What one round published for one case, and what must hold afterwards."""

    case: Case
    check_id: str
    fix: str
    records: list[Published]
    before: dict[str, CheckResult]


@dataclass
class Tally:
    applied: dict[str, int] = field(default_factory=dict)  # check id -> fixes proven
    tried: set[tuple[str, str, str]] = field(default_factory=set)  # (address, id, fix)
    problems: list[str] = field(default_factory=list)


def next_fix(case: Case, results: dict[str, CheckResult], tally: Tally) -> Proof | None:
    """The first non-pass result (catalogue order) with a record in its fix not tried before."""
    for check_id in catalogue.ALL:
        result = results.get(check_id)
        if result is None or result.status is Status.PASS:
            continue
        records = fix_records(result.fix)
        key = (case.address, check_id, result.fix)
        if records and key not in tally.tried:
            tally.tried.add(key)
            return Proof(case, check_id, result.fix, records, results)
    return None


def judge(proof: Proof, after: dict[str, CheckResult], tally: Tally) -> None:
    where = f"{proof.case.address} {dict(proof.case.defects)}: {proof.check_id} fix {proof.fix!r}"
    fixed = after[proof.check_id]
    if fixed.status is not Status.PASS:
        tally.problems.append(f"{where} -> still {fixed.status.value}: {fixed.summary}")
    worse = [
        f"{i} {proof.before[i].status.value}->{r.status.value} ({r.summary} {r.detail})"
        for i, r in after.items()
        if i in proof.before
        and proof.before[i].status is not Status.SKIP
        and RANK[r.status] > RANK[proof.before[i].status]
    ]
    if worse:
        tally.problems.append(f"{where} -> worse: {'; '.join(worse)}")
    spf_published = any(
        rtype == "TXT" and data and "".join(data).lower().startswith("v=spf1")
        for _owner, rtype, data in proof.records
    )
    authorizes = after["spf.authorizes"]
    if spf_published and authorizes.status is not Status.PASS:
        tally.problems.append(
            f"{where} -> the SPF fix does not authorise {SERVER}: {authorizes.summary}"
        )
    if fixed.status is Status.PASS and not worse:
        tally.applied[proof.check_id] = tally.applied.get(proof.check_id, 0) + 1


def test_every_record_fix_of_the_generated_corpus_works(
    corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    by_address = {c.address: c for c in corpus.cases}
    results = verify(corpus, corpus.cases)
    found = {i for r in results.values() for i, c in r.items() if c.status is not Status.PASS}
    tally = Tally()
    # The lab answers every question: "could not tell" is a misjudged defect here.
    tally.problems += [
        f"{address} {dict(by_address[address].defects)}: {i} could not tell: {c.summary}"
        for address, checks in results.items()
        for i, c in checks.items()
        if c.status is Status.ERROR
    ]
    pending = list(corpus.cases)
    rounds = 0
    while pending and rounds < MAX_ROUNDS:
        rounds += 1
        proofs = [p for c in pending if (p := next_fix(c, results[c.address], tally))]
        if not proofs:
            break
        changed: dict[str, list[Record]] = {}
        for p in proofs:
            zone = p.case.zone
            changed[zone] = apply_fix(zone, corpus.nsd.extra[zone], p.records)
        corpus.nsd.publish_many(changed)
        after = verify(corpus, [p.case for p in proofs])
        for p in proofs:
            judge(p, after[p.case.address], tally)
        results.update(after)
        pending = [by_address[p.case.address] for p in proofs]
    with capsys.disabled():  # the case count and the ids covered belong in every CI log
        print(
            f"\ngenerated corpus: {len(corpus.cases)} cases, {sum(tally.applied.values())} "
            f"fixes published and proven in {rounds} rounds; non-pass check ids seen: "
            f"{', '.join(i for i in catalogue.ALL if i in found)}; record fixes proven per "
            "check: " + ", ".join(f"{i} {n}" for i, n in tally.applied.items())
        )
    assert len(corpus.cases) >= 300
    assert not tally.problems, f"{len(tally.problems)} fixes failed:\n" + "\n".join(
        tally.problems[:40]
    )
    # Every family's record fixes were exercised.
    assert {"spf.record", "spf.lookups", "spf.authorizes", "dkim.key", "dmarc.record"} <= set(
        tally.applied
    ), tally.applied
