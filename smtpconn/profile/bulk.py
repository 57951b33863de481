"""Many addresses at once: rows of ``add-address`` requests read from CSV or JSON Lines, planned
one after another with :func:`plan_add` (the one implementation of the adding rules), and the
profile's entries written back in the same format.

Columns are :class:`AddRequest` field names (``dkim_selector``; ``dkim-selector`` is accepted
too), found by reflection, so a field added to the request is importable without a change here.
A value is converted by the field's declared type: ``bool`` fields take true/false/yes/no/1/0,
everything else is text; an empty cell is "not given".
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from smtpconn.errors import UsageError
from smtpconn.profile.edit import AddPlan, AddRequest, InputNames, plan_add
from smtpconn.profile.keys import declared_keys
from smtpconn.profile.model import Profile, SendingLimits, SupportAddress, UnauthenticatedPolicy
from smtpconn.profile.oauth import OAuthSettings, oauth_to_data


class BulkFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


_SUFFIXES = {".csv": BulkFormat.CSV, ".jsonl": BulkFormat.JSONL, ".ndjson": BulkFormat.JSONL}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}
# Left out of an export: a re-add is a decision of whoever imports the file again.
_NOT_EXPORTED = frozenset({"readd"})
# Request fields that are not inputs (add-address fills them itself): no column.
_NOT_COLUMNS = frozenset({"mx_hosts"})


def format_of(path: Path, given: str | None) -> BulkFormat:
    """The format named by ``given``, else by the file's extension."""
    if given:
        try:
            return BulkFormat(given.strip().lower())
        except ValueError:
            raise UsageError(
                f"format {given!r} is not known", fix="use one of: csv | jsonl"
            ) from None
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise UsageError(
            f"cannot tell the format of {path.name} from its extension",
            fix="name it .csv or .jsonl, or give the format",
            input="format",
        )
    return found


def _request_fields() -> dict[str, str]:
    """Each request field's name and its declared type (as written, e.g. ``str | None``)."""
    return {f.name: str(f.type) for f in fields(AddRequest) if f.name not in _NOT_COLUMNS}


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # where the row starts in the file (1-based), for messages
    request: AddRequest


def _convert(kind: str, column: str, value: Any, where: str) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if value is not None else ""
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise UsageError(f"{where}: {column}: {value!r} is not true or false")
    if value is None or value == "":
        return None
    if kind == "int | None":
        return _whole_number(column, value, where)
    if not isinstance(value, str):
        raise UsageError(f"{where}: {column}: must be text, not {type(value).__name__}")
    return value


def _whole_number(column: str, value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise UsageError(f"{where}: {column}: {value!r} is not a whole number")


def _request(values: dict[str, Any], where: str) -> AddRequest:
    known = _request_fields()
    given: dict[str, Any] = {}
    for column, value in values.items():
        name = column.strip().replace("-", "_") if isinstance(column, str) else ""
        if name not in known:
            raise UsageError(
                f"{where}: {column!r} is not a field of add-address",
                fix=f"use these columns: {', '.join(known)}",
            )
        converted = _convert(known[name], name, value, where)
        if converted is not None:
            given[name] = converted
    if not given.get("address"):
        raise UsageError(f"{where}: address: missing", fix="every row needs an address")
    return AddRequest(**given)


def _csv_rows(text: str, source: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra")
    for values in reader:
        where = f"{source}:{reader.line_num}"
        if "\x00extra" in values:
            raise UsageError(f"{where}: more cells than the header has columns")
        if not any((v or "").strip() for v in values.values()):
            continue  # a blank line
        yield Row(reader.line_num, _request(values, where))


def _jsonl_rows(text: str, source: str) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(values, dict):
            raise UsageError(f"{where}: must be a JSON object of add-address fields")
        yield Row(number, _request(values, where))


def read_rows(path: Path, fmt: BulkFormat) -> list[Row]:
    """Every row of the file as a request; the first bad one raises naming its line and field."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet may start with a BOM
    except FileNotFoundError:
        raise UsageError(f"no file at {path}", input="file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    rows = _csv_rows(text, path.name) if fmt is BulkFormat.CSV else _jsonl_rows(text, path.name)
    return list(rows)


@dataclass(frozen=True, slots=True)
class NewLogin:
    """An inbound password generated by the import, to hand over once."""

    address: str
    username: str
    password: str


@dataclass(slots=True)
class ImportPlan:
    profile: Profile
    plans: list[tuple[Row, AddPlan]] = field(default_factory=list)

    @property
    def new_logins(self) -> list[NewLogin]:
        return [
            NewLogin(plan.entry.address.ascii, plan.entry.inbound.username, plan.new_password)
            for _, plan in self.plans
            if plan.new_password is not None and plan.entry.inbound is not None
        ]

    @property
    def warnings(self) -> list[str]:
        """Each distinct warning once, with the lines it concerns (a thousand rows sharing one
        unset variable give one warning, not a thousand)."""
        lines: dict[str, list[int]] = {}
        for row, plan in self.plans:
            for message in plan.warnings:
                lines.setdefault(message, []).append(row.line)
        return [f"{_lines_text(numbers)}: {message}" for message, numbers in lines.items()]


def _lines_text(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    shown = ", ".join(str(n) for n in numbers[:5])
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"lines {shown}{more}"


def plan_import(profile: Profile, rows: list[Row], *, base_dir: Path, source: str) -> ImportPlan:
    """Apply every row in order, as that many ``add-address`` runs would; the first row that
    ``add-address`` would refuse raises, naming its line (and the field, in the library's words)."""
    result = ImportPlan(profile)
    for row in rows:
        try:
            plan = plan_add(result.profile, row.request, base_dir=base_dir, names=InputNames())
        except UsageError as exc:
            raise UsageError(f"{source}:{row.line}: {exc.message}", fix=exc.fix) from None
        result.profile = plan.profile
        result.plans.append((row, plan))
    return result


def entry_request(entry: SupportAddress) -> dict[str, Any]:
    """The ``add-address`` fields that would recreate ``entry`` (secrets as references; an
    inbound login as its user name only: its password exists only as a hash)."""
    o = entry.outbound
    values: dict[str, Any] = {
        "address": entry.address.ascii,
        "mode": entry.mode.value,
        "workflow": entry.workflow.value,
    }
    if o is not None:
        host = f"[{o.host}]" if ":" in o.host else o.host
        values |= {
            "server": f"{host}:{o.port}",
            "username": o.username,
            "security": o.security.value,
            "auth": o.auth.value,
        }
        if o.oauth is not None:
            values |= _oauth_request(o.oauth)
        else:
            values["secret"] = str(o.secret)
        values |= {k: v for k, v in _limit_values(o.limits).items() if v is not None}
    if entry.dkim is not None:
        values["dkim_selector"] = entry.dkim.selector
        if entry.dkim.private_key is not None:
            values["dkim_key"] = str(entry.dkim.private_key)
    if entry.inbound is not None:
        values["inbound_username"] = entry.inbound.username
    if entry.unauthenticated_policy is not UnauthenticatedPolicy.TAG:  # the default stays out
        values["unauthenticated_policy"] = entry.unauthenticated_policy.value
    if entry.trusted_arc_sealers:
        values["trusted_arc_sealers"] = ",".join(entry.trusted_arc_sealers)
    return values


def _oauth_request(oauth: OAuthSettings) -> dict[str, Any]:
    """The token source as add-address's OAuth fields (references, never what they hold)."""
    stored = oauth_to_data(oauth)
    named = {"provider": "provider", **{k: f"oauth_{k}" for k in stored if k != "provider"}}
    return {named[k]: v for k, v in stored.items()}


def _limit_values(limits: SendingLimits) -> dict[str, int | None]:
    return {k.name: getattr(limits, k.name) for k in declared_keys(SendingLimits)}


def export_text(profile: Profile, fmt: BulkFormat) -> str:
    columns = [name for name in _request_fields() if name not in _NOT_EXPORTED]
    records = [entry_request(e) for e in profile.addresses]
    if fmt is BulkFormat.JSONL:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()
