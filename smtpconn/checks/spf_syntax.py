"""SPF record syntax (RFC 7208 §4.6, §12): parse a record into terms, report every offending term,
and build the records we suggest as fixes (a merge of several records, a record with the server
added).

Pure functions; no DNS here.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
#: Mechanisms and modifiers that cost a DNS lookup (RFC 7208 §4.6.4).
DNS_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_QUALIFIERS = "+-~?"
_MODIFIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%|_|-)", re.IGNORECASE)
_TOPLABEL = re.compile(r"(?:[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*)")


def is_spf(text: str) -> bool:
    """RFC 7208 §4.5: the record starts with exactly ``v=spf1`` followed by a space or its end."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # as written
    name: str  # mechanism or modifier name, lower case
    qualifier: str = "+"
    value: str = ""  # domain-spec, network, or modifier value (without the CIDR suffix)
    cidr4: int | None = None
    cidr6: int | None = None
    modifier: bool = False

    @property
    def has_macro(self) -> bool:
        return "%" in self.value


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    term: str
    reason: str
    suggestion: str | None = None  # a corrected term when the mistake is obvious


@dataclass(slots=True)
class SpfRecord:
    text: str
    terms: list[Term] = field(default_factory=list)
    problems: list[SyntaxProblem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def modifier(self, name: str) -> Term | None:
        return next((t for t in self.terms if t.modifier and t.name == name), None)

    @property
    def all_term(self) -> Term | None:
        return next((t for t in self.terms if t.name == "all" and not t.modifier), None)

    def evaluated_terms(self) -> list[Term]:
        """The mechanisms evaluated for a sender that matches nothing: everything up to and
        including ``all`` (nothing after ``all`` is ever reached)."""
        out: list[Term] = []
        for term in self.terms:
            if term.modifier:
                continue
            out.append(term)
            if term.name == "all":
                break
        return out


def _check_domain_spec(spec: str) -> str | None:
    """None if ``spec`` is a valid domain-spec (RFC 7208 §7.1), else the reason."""
    if not spec:
        return "needs a domain"
    rest = _MACRO.sub("", spec)
    if "%" in rest:
        return "has an invalid macro (a lone '%'; write '%%' for a literal percent)"
    if any(c.isspace() for c in spec):
        return "contains white space"
    if spec.endswith("}"):
        return None  # ends in a macro-expand: the top label is only known after expansion
    labels = spec.rstrip(".").split(".")
    if len(labels) < 2:
        return "is not a fully qualified domain"
    if not _TOPLABEL.fullmatch(labels[-1]) or labels[-1].startswith("-"):
        return "does not end in a valid top-level label (an IP address belongs in ip4:/ip6:)"
    return None


def _split_cidr(value: str) -> tuple[str, int | None, int | None, str | None]:
    """Take ``/n`` and ``//m`` off the end of an a/mx argument."""
    cidr4 = cidr6 = None
    match = re.search(r"(?:/(\d+))?(?://(\d+))?$", value)
    if match and match.group(0):
        if match.group(1) is not None:
            cidr4 = int(match.group(1))
        if match.group(2) is not None:
            cidr6 = int(match.group(2))
        value = value[: match.start()]
    if cidr4 is not None and cidr4 > 32:
        return value, cidr4, cidr6, f"IPv4 prefix /{cidr4} is over 32"
    if cidr6 is not None and cidr6 > 128:
        return value, cidr4, cidr6, f"IPv6 prefix //{cidr6} is over 128"
    return value, cidr4, cidr6, None


def _suggest(name: str) -> str | None:
    close = difflib.get_close_matches(name.lower(), [*MECHANISMS, "redirect"], n=1, cutoff=0.6)
    return close[0] if close else None


_Parsed = tuple[Term | None, SyntaxProblem | None]


@dataclass(frozen=True, slots=True)
class _Mechanism:
    """A mechanism as written, split up: ``-a:example.com/24`` is ``-``, ``a``, ``:``,
    ``example.com/24``."""

    text: str
    qualifier: str
    name: str  # lower case
    sep: str  # ":" when an argument was given with a colon, else ""
    arg: str

    def problem(self, reason: str, suggestion: str | None = None) -> _Parsed:
        return None, SyntaxProblem(self.text, reason, suggestion)


def _parse_term(text: str) -> _Parsed:
    modifier = re.fullmatch(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)", text)
    if modifier:
        return _parse_modifier(text, modifier.group(1).lower(), modifier.group(2))
    mech, written = _split_mechanism(text)
    if mech.name not in MECHANISMS:
        return _unknown_mechanism(mech, written)
    return _MECHANISM_PARSERS[mech.name](mech)


def _parse_modifier(text: str, name: str, value: str) -> _Parsed:
    if name in ("redirect", "exp"):
        reason = _check_domain_spec(value)
        if reason:
            return None, SyntaxProblem(text, f"{name}= {reason}")
    elif _MACRO.sub("", value).count("%"):
        return None, SyntaxProblem(text, "has an invalid macro")
    return Term(text, name, value=value, modifier=True), None


def _split_mechanism(text: str) -> tuple[_Mechanism, str]:
    """The mechanism, and its name as written (for messages)."""
    qualifier = "+"
    body = text
    if body and body[0] in _QUALIFIERS:
        qualifier, body = body[0], body[1:]
    name, sep, arg = body.partition(":")
    if not sep and "/" in name:
        name, slash, rest = name.partition("/")
        arg, sep = slash + rest, ""
    return _Mechanism(text, qualifier, name.lower(), sep, arg), name


def _unknown_mechanism(mech: _Mechanism, written: str) -> _Parsed:
    guess = _suggest(mech.name)
    q = "" if mech.qualifier == "+" else mech.qualifier
    suggestion = f"{q}{guess}{mech.sep}{mech.arg}" if guess else None
    hint = f" (did you mean {guess}{mech.sep}?)" if guess else ""
    return mech.problem(f"unknown mechanism {written!r}{hint}", suggestion)


def _parse_all(mech: _Mechanism) -> _Parsed:
    if mech.sep or mech.arg:
        return mech.problem("'all' takes no argument")
    return Term(mech.text, "all", mech.qualifier), None


def _parse_ip(mech: _Mechanism) -> _Parsed:
    name, arg = mech.name, mech.arg
    if not mech.sep or not arg:
        example = "192.0.2.0/24" if name == "ip4" else "2001:db8::/32"
        return mech.problem(f"{name}: needs a network, e.g. {name}:{example}")
    try:
        network = ipaddress.ip_network(arg, strict=False)
    except ValueError:
        return mech.problem(f"{arg!r} is not an {name} address or network")
    if network.version != (4 if name == "ip4" else 6):
        return mech.problem(f"{arg!r} is not an {name} address")
    return Term(mech.text, name, mech.qualifier, value=arg), None


def _parse_domain_arg(mech: _Mechanism) -> _Parsed:
    """include and exists: a domain-spec is required."""
    if not mech.sep:
        return mech.problem(f"{mech.name} needs ':' and a domain")
    reason = _check_domain_spec(mech.arg)
    if reason:
        return mech.problem(f"{mech.name}: {reason}")
    return Term(mech.text, mech.name, mech.qualifier, value=mech.arg), None


def _parse_host(mech: _Mechanism) -> _Parsed:
    """a, mx, ptr: optional domain-spec, and (a, mx) optional CIDR lengths."""
    value, cidr4, cidr6, cidr_problem = _split_cidr(mech.arg)
    if cidr_problem:
        return mech.problem(cidr_problem)
    if mech.name == "ptr" and (cidr4 is not None or cidr6 is not None):
        return mech.problem("ptr takes no prefix length")
    if mech.sep:
        reason = _check_domain_spec(value)
        if reason:
            return mech.problem(f"{mech.name}: {reason}")
    term = Term(mech.text, mech.name, mech.qualifier, value=value, cidr4=cidr4, cidr6=cidr6)
    return term, None


_MECHANISM_PARSERS: dict[str, Callable[[_Mechanism], _Parsed]] = {
    "all": _parse_all,
    "ip4": _parse_ip,
    "ip6": _parse_ip,
    "include": _parse_domain_arg,
    "exists": _parse_domain_arg,
    "a": _parse_host,
    "mx": _parse_host,
    "ptr": _parse_host,
}
assert set(_MECHANISM_PARSERS) == set(MECHANISMS)


def parse_spf(text: str) -> SpfRecord:
    """Parse a ``v=spf1`` record; every problem is collected, not only the first."""
    record = SpfRecord(text)
    parts = text.split(" ")
    if not parts or parts[0].lower() != "v=spf1":
        record.problems.append(
            SyntaxProblem(parts[0] if parts else "", "does not start with v=spf1")
        )
        return record
    seen_modifiers: set[str] = set()
    for part in parts[1:]:
        if not part:
            continue  # several spaces between terms are allowed
        term, problem = _parse_term(part)
        if problem:
            record.problems.append(problem)
            continue
        assert term is not None
        if term.modifier and term.name in ("redirect", "exp"):
            if term.name in seen_modifiers:
                record.problems.append(SyntaxProblem(part, f"{term.name}= appears more than once"))
                continue
            seen_modifiers.add(term.name)
        record.terms.append(term)
    return record


def corrected(record: SpfRecord) -> str | None:
    """The record with every obvious mistake corrected, or None if any mistake has no obvious
    correction."""
    replacements: dict[str, str] = {}
    for problem in record.problems:
        if problem.suggestion is None:
            return None
        replacements[problem.term] = problem.suggestion
    return " ".join(replacements.get(p, p) for p in record.text.split(" ") if p)


def without_bad_terms(record: SpfRecord) -> str:
    bad = {p.term for p in record.problems}
    return " ".join(p for p in record.text.split(" ") if p and p not in bad)


_ALL_STRICTNESS = {"-": 3, "~": 2, "?": 1, "+": 0}


def merge(texts: list[str]) -> str:
    """One record that keeps every term of ``texts`` (in order, without duplicates), with the
    strictest ``all`` last; ``redirect=`` only survives when there is no ``all`` (it would be
    ignored otherwise, RFC 7208 §6.1)."""
    terms: list[Term] = []
    seen: set[str] = set()
    alls: list[Term] = []
    redirect: Term | None = None
    exp: Term | None = None
    for text in texts:
        for term in parse_spf(text).terms:
            if term.name == "all" and not term.modifier:
                alls.append(term)
            elif term.modifier and term.name == "redirect":
                redirect = redirect or term
            elif term.modifier and term.name == "exp":
                exp = exp or term
            elif term.text.lower() not in seen:
                seen.add(term.text.lower())
                terms.append(term)
    out = ["v=spf1", *(t.text for t in terms)]
    if alls:
        out.append(max(alls, key=lambda t: _ALL_STRICTNESS[t.qualifier]).text)
    elif redirect:
        out.append(redirect.text)
    if exp:
        out.append(exp.text)
    return " ".join(out)


def with_mechanisms(text: str, added: list[str]) -> str:
    """``text`` with ``added`` mechanisms placed where they are evaluated: before ``all`` (nothing
    after it is reached) or before ``redirect=``; existing terms are kept as they are."""
    parts = [p for p in text.split(" ") if p]
    new = [a for a in added if a.lower() not in {p.lower() for p in parts}]
    for index, part in enumerate(parts[1:], start=1):
        body = part.lstrip(_QUALIFIERS).lower()
        if body == "all" or part.lower().startswith("redirect="):
            return " ".join([*parts[:index], *new, *parts[index:]])
    return " ".join([*parts, *new])


def address_mechanism(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"ip{ip.version}:{ip.compressed}"
