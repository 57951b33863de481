"""The ``mta-sts.policy`` check's pure half: what a policy fetch came back with, the RFC 8461 §3.2
policy grammar, MX pattern matching (§4.1), and the verdict. No I/O here (sts_fetch.py fetches),
so every rule is unit-tested on hand-built fetches.

Senders treat a policy they cannot fetch, or cannot parse, as no policy at all (§3.3): a
domain that publishes ``_mta-sts`` but serves a broken policy gets none of MTA-STS's protection
while believing it has it. That is why every fetch defect below is a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from smtpconn.checks.model import CheckResult, Status

CHECK_ID = "mta-sts.policy"
POLICY_PATH = "/.well-known/mta-sts.txt"
#: RFC 8461 §3.3: senders may refuse larger bodies; 64 KB is the limit they are told to allow.
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31557600  # §3.2: one year, in seconds
_MODES = ("enforce", "testing", "none")
_MX_PATTERN = re.compile(r"(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]+")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


class FetchFailure(StrEnum):
    NO_ADDRESS = "no-address"  # mta-sts.<domain> has no A/AAAA
    DNS_ERROR = "dns-error"  # could not tell whether it has one
    REFUSED = "refused"  # nothing listens on the HTTPS port
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # no route, reset: could not tell
    TLS = "tls"  # handshake or certificate verification failed
    PROTOCOL = "protocol"  # not an HTTP response we can read


@dataclass(frozen=True)
class PolicyFetch:
    """One GET of the policy URL: either a ``failure`` or an HTTP response."""

    host: str  # mta-sts.<domain>
    failure: FetchFailure | None = None
    error: str = ""  # what went wrong, for the detail
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    too_large: bool = False  # the body exceeded MAX_POLICY_BYTES (reading stopped there)

    @property
    def url(self) -> str:
        return f"https://{self.host}{POLICY_PATH}"


@dataclass(frozen=True)
class Policy:
    mode: str
    max_age: int
    mx: tuple[str, ...]


def parse_policy(text: str) -> Policy | list[str]:
    """The policy, or the problems that make senders reject it (§3.2: key/value lines split on
    LF or CRLF; for a repeated key other than ``mx`` only the first counts)."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.rstrip(" \t")
        if not line:
            continue
        name, colon, value = line.partition(":")
        name, value = name.rstrip(" \t"), value.strip(" \t")
        if not colon or not _FIELD_NAME.fullmatch(name):
            problems.append(f"line {number} is not 'key: value': {line[:60]!r}")
        elif name == "mx":
            mx.append(value)
        else:
            fields.setdefault(name, value)
    problems += _field_problems(fields, mx)
    if problems:
        return problems
    return Policy(fields["mode"], int(fields["max_age"]), tuple(p.lower() for p in mx))


def _field_problems(fields: dict[str, str], mx: list[str]) -> list[str]:
    problems = []
    if fields.get("version") != "STSv1":
        problems.append(f"version must be STSv1 (found {fields.get('version', 'none')!r})")
    mode = fields.get("mode")
    if mode not in _MODES:
        problems.append(f"mode must be enforce, testing or none (found {mode or 'none'!r})")
    age = fields.get("max_age", "")
    if not (age.isdigit() and len(age) <= 10 and int(age) <= MAX_AGE_LIMIT):
        problems.append(f"max_age must be whole seconds up to {MAX_AGE_LIMIT} (found {age!r})")
    bad = [p for p in mx if not _MX_PATTERN.fullmatch(p)]
    if bad:
        problems.append(f"invalid mx pattern(s): {', '.join(bad)}")
    if not mx and mode in ("enforce", "testing"):
        problems.append("no mx: line (senders would accept no MX host)")
    return problems


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: a literal name matches itself; ``*.example.com`` matches exactly one more label on
    the left (``mx1.example.com``, not ``a.b.example.com`` nor ``example.com``)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


def uncovered(policy: Policy, mx_hosts: list[str]) -> list[str]:
    return [h for h in mx_hosts if not any(mx_matches(p, h) for p in policy.mx)]


def policy_template(mx_hosts: list[str]) -> str:
    lines = ["version: STSv1", "mode: enforce", *(f"mx: {h}" for h in mx_hosts)]
    return "\\n".join([*lines, "max_age: 604800"])


def _serve_fix(fetch: PolicyFetch, mx_hosts: list[str]) -> str:
    return (
        f"serve {fetch.url} over HTTPS with a certificate valid for {fetch.host}, status 200, "
        f"Content-Type text/plain, no redirect, at most {MAX_POLICY_BYTES // 1024} KB, e.g. "
        f"'{policy_template(mx_hosts)}'; then change the id= of the _mta-sts TXT record"
    )


def _fail(fetch: PolicyFetch, summary: str, fix: str, detail: str = "") -> CheckResult:
    return CheckResult(CHECK_ID, Status.FAIL, summary, detail or fetch.error, fix)


def judge_transport(fetch: PolicyFetch, mx_hosts: list[str]) -> CheckResult | str:
    """The policy text, or the result that says why there is none to read."""
    serve = _serve_fix(fetch, mx_hosts)
    if fetch.failure is FetchFailure.NO_ADDRESS:
        return _fail(
            fetch,
            f"{fetch.host} has no address: senders cannot fetch the MTA-STS policy",
            f"publish an A (and/or AAAA) record for {fetch.host} pointing at a web server; {serve}",
        )
    if fetch.failure in (FetchFailure.DNS_ERROR, FetchFailure.TIMEOUT, FetchFailure.UNREACHABLE):
        return CheckResult(
            CHECK_ID,
            Status.ERROR,
            f"could not tell: {fetch.url} did not answer ({fetch.failure.value})",
            fetch.error,
            "make sure the resolver and the web server answer, then run verify again",
        )
    if fetch.failure is FetchFailure.REFUSED:
        return _fail(fetch, f"nothing accepts HTTPS connections at {fetch.host}", serve)
    if fetch.failure is FetchFailure.TLS:
        return _fail(fetch, f"the TLS handshake with {fetch.host} failed: {fetch.error}", serve)
    if fetch.failure is not None:
        return _fail(fetch, f"{fetch.url} did not give a readable HTTP response", serve)
    return _judge_response(fetch, serve)


def _judge_response(fetch: PolicyFetch, serve: str) -> CheckResult | str:
    if 300 <= fetch.status < 400:
        where = fetch.headers.get("location", "?")
        return _fail(
            fetch,
            f"{fetch.url} redirects (HTTP {fetch.status} to {where}); senders do not follow "
            "redirects (RFC 8461 §3.3)",
            serve,
        )
    if fetch.status != 200:
        return _fail(fetch, f"{fetch.url} answered HTTP {fetch.status}, not 200", serve)
    media = fetch.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        return _fail(
            fetch, f"{fetch.url} is served as {media or 'no Content-Type'}, not text/plain", serve
        )
    if fetch.too_large:
        return _fail(fetch, f"{fetch.url} is larger than {MAX_POLICY_BYTES // 1024} KB", serve)
    try:
        return fetch.body.decode("utf-8")
    except UnicodeDecodeError:
        return _fail(fetch, f"{fetch.url} is not UTF-8 text", serve)


def judge_policy(fetch: PolicyFetch, mx_hosts: list[str]) -> CheckResult:
    """The verdict on a fetched policy for a domain whose MX hosts are ``mx_hosts``."""
    text = judge_transport(fetch, mx_hosts)
    if isinstance(text, CheckResult):
        return text
    policy = parse_policy(text)
    if isinstance(policy, list):
        return _fail(
            fetch,
            f"the MTA-STS policy at {fetch.url} is invalid: {policy[0]}",
            _serve_fix(fetch, mx_hosts),
            detail="; ".join(policy),
        )
    missing = uncovered(policy, mx_hosts)
    detail = f"mode {policy.mode}, max_age {policy.max_age}, mx {', '.join(policy.mx) or '-'}"
    add = (
        f"add {' and '.join(f'mx: {h}' for h in missing)} to {fetch.url}, then change the "
        "id= of the _mta-sts TXT record"
    )
    if policy.mode == "enforce" and missing:
        return CheckResult(
            CHECK_ID,
            Status.FAIL,
            f"MX {', '.join(missing)} not covered by any mx: of the enforced policy: senders "
            "that honour MTA-STS will not deliver to it",
            detail,
            add,
        )
    if policy.mode != "enforce":
        also = f"; MX {', '.join(missing)} not covered" if missing else ""
        fix = (add + "; then " if missing else "") + "set mode: enforce once TLS reports are clean"
        return CheckResult(
            CHECK_ID,
            Status.WARN,
            f"the MTA-STS policy is in mode {policy.mode}: senders do not enforce TLS{also}",
            detail,
            fix,
        )
    return CheckResult(CHECK_ID, Status.PASS, "enforced MTA-STS policy covers every MX", detail)
