"""Edit the profile's text in place for the common edits: appending new ``[[addresses]]`` tables
and removing some, touching no other byte of the file.

Merging through tomlkit keeps comments but parses and re-emits the whole document, which costs
seconds at thousands of addresses. Adding an address only appends one table at the end of the
array, and removing one only cuts its lines out, so those two edits are done on the text itself.
Anything else (a re-add, a changed ``[relay]``, an array written inline) returns ``None`` and the
caller takes the full merge. The caller also re-reads the result and falls back when it does not
mean exactly the new profile, so a text this module misreads (say, a ``[[addresses]]`` line inside
a multi-line string) costs speed, never correctness.
"""

from __future__ import annotations

import re

import tomli_w

from smtpconn.profile.model import Profile, SupportAddress, entry_to_data

# A table header line: `[name]` or `[[name]]`, optionally indented, optionally followed by a
# comment. Only the names matter here, so quoted keys are kept as written.
_HEADER = re.compile(r"^[ \t]*(\[\[?)[ \t]*([^\]\n]*?)[ \t]*\]\]?[ \t]*(?:#[^\n]*)?$", re.M)
_ADDRESSES = "addresses"
_ENTRY_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*addresses[ \t]*\]\][ \t]*(?:#[^\n]*)?$", re.M)
_SUB_TABLE = re.compile(r"^\[", re.M)  # tomli_w writes an entry's sub-tables as `[outbound]`


def tables_text(entries: tuple[SupportAddress, ...]) -> str:
    """``entries`` as ``[[addresses]]`` tables, always (a clean render writes a short array
    inline, and an inline array cannot follow the tables already in the file)."""
    return "\n".join(
        "[[addresses]]\n" + _SUB_TABLE.sub("[addresses.", tomli_w.dumps(entry_to_data(e)))
        for e in entries
    )


def _same_settings(before: Profile, after: Profile) -> bool:
    return (before.version, before.connector, before.relay) == (
        after.version,
        after.connector,
        after.relay,
    )


def _appended(before: Profile, after: Profile) -> tuple[SupportAddress, ...] | None:
    """The entries ``after`` adds at the end of ``before``'s, when that is all it changes."""
    count = len(before.addresses)
    if len(after.addresses) <= count or after.addresses[:count] != before.addresses:
        return None
    return after.addresses[count:]


def _removed(before: Profile, after: Profile) -> list[int] | None:
    """The indexes of ``before``'s entries missing from ``after``, when that is all it changes."""
    kept = {e.address.key for e in after.addresses}
    indexes = [i for i, e in enumerate(before.addresses) if e.address.key not in kept]
    remaining = tuple(e for i, e in enumerate(before.addresses) if i not in set(indexes))
    if not indexes or remaining != after.addresses:
        return None
    return indexes


def _entry_spans(text: str) -> list[tuple[int, int]]:
    """Where each ``[[addresses]]`` table starts and ends (its sub-tables included); the comment
    and blank lines just before the next header stay with that header."""
    headers = [
        (m.start(), m.group(1) == "[[", m.group(2).replace(" ", "")) for m in _HEADER.finditer(text)
    ]
    spans: list[tuple[int, int]] = []
    for index, (start, is_array, name) in enumerate(headers):
        if not (is_array and name == _ADDRESSES):
            continue
        end = len(text)
        for later_start, _, later_name in headers[index + 1 :]:
            if not later_name.startswith(_ADDRESSES + "."):
                end = later_start
                break
        spans.append((start, _before_leading_comments(text, start, end)))
    return spans


def _before_leading_comments(text: str, start: int, end: int) -> int:
    """Move ``end`` back over the comment and blank lines that introduce the next table."""
    lines = text[start:end].splitlines(keepends=True)
    while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        end -= len(lines.pop())
    return end


def _insert_offset(text: str, last_entry: int | None) -> int:
    """Where a new ``[[addresses]]`` table goes: after the last one (starting at
    ``last_entry``) and its sub-tables, where the merge puts it, before any comment that
    introduces the table after; without one, at the end."""
    if last_entry is None:
        return len(text)
    for header in _HEADER.finditer(text, last_entry + 1):
        if not header.group(2).replace(" ", "").startswith(_ADDRESSES + "."):
            return _before_leading_comments(text, last_entry, header.start())
    return len(text)


def _append(text: str, entries: tuple[SupportAddress, ...], last_entry: int | None) -> str:
    offset = _insert_offset(text, last_entry)
    head, rest = text[:offset].rstrip("\n"), text[offset:].lstrip("\n")
    body = (head + "\n\n" if head else "") + tables_text(entries)
    return body + ("\n" + rest if rest else "")


def _cut(text: str, indexes: list[int], count: int) -> str | None:
    spans = _entry_spans(text)
    if len(spans) != count:
        return None  # the array is not (only) written as [[addresses]] tables
    for index in sorted(indexes, reverse=True):
        start, end = spans[index]
        text = text[:start] + text[end:]
    # A cut leaves the blank lines that separated the table behind: keep one, as the merge does.
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def edit_text(text: str, before: Profile, after: Profile) -> str | None:
    """``text`` (which means ``before``) changed to mean ``after`` by appending or cutting
    ``[[addresses]]`` tables only; ``None`` when the change is not of that kind."""
    if not _same_settings(before, after):
        return None
    appended = _appended(before, after)
    if appended is not None:
        starts = [m.start() for m in _ENTRY_HEADER.finditer(text)]
        if len(starts) != len(before.addresses):
            return None  # an inline `addresses = [...]` cannot take a [[addresses]] table
        return _append(text, appended, starts[-1] if starts else None)
    removed = _removed(before, after)
    if removed is not None:
        return _cut(text, removed, len(before.addresses))
    return None
