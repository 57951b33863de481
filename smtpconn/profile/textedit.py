"""Edit the profile's text in place for the common edits: appending new ``[[addresses]]`` tables
and removing some, touching no other byte of the file.

Merging through tomlkit keeps comments but parses and re-emits the whole document, which costs
seconds at thousands of addresses. Adding an address only appends one table at the end of the
array, and removing one only cuts its lines out, so those two edits are done on the text itself.
Anything else (a re-add, a changed ``[relay]``, an array written inline, a file with multi-line
strings or quoted table names) returns ``None`` and the caller takes the full merge.

The result is checked without re-reading the whole file (that costs as much as the edit saves):
an edit is a splice, and :func:`splice_means` re-reads only the tables it cut, or the tables it
added together with the table they follow, and requires them to mean exactly those entries. That
suffices because every byte outside the splice is the file's own, and the splice points are
table headers: without a multi-line string in the file (refused above) a line that looks like a
header is one, so a whole ``[[addresses]]`` table with its sub-tables is one element of the
array and nothing else; a sub-table taken for the end of the array would leave the table it
belongs to (cut, or read back with the added ones) short, and the check fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tomli_w

from smtpconn.profile import tomlread
from smtpconn.profile.model import Profile, SupportAddress, entry_to_data, profile_from_data

# A table header line: `[name]` or `[[name]]`, optionally indented, optionally followed by a
# comment. Only the names matter here, so quoted keys are kept as written.
_HEADER = re.compile(r"^[ \t]*(\[\[?)[ \t]*([^\]\n]*?)[ \t]*\]\]?[ \t]*(?:#[^\n]*)?$", re.M)
_ADDRESSES = "addresses"
# Line-start patterns begin with a newline rather than `^` under re.M and are run on the text
# with a newline put in front: the regex engine then jumps from newline to newline instead of
# trying every offset of the file (4x faster on a 1 MB profile).
_ENTRY_HEADER = re.compile(r"\n[ \t]*\[\[[ \t]*addresses[ \t]*\]\][ \t]*(?:#[^\n]*)?(?=\n|\Z)")
_SUB_TABLE = re.compile(r"^\[", re.M)  # tomli_w writes an entry's sub-tables as `[outbound]`
# What this module does not read the way TOML does: multi-line strings (a header-like line in
# one is not a header) and quoted table names (`["addresses".outbound]`). Both take the merge.
_QUOTED_HEADER = re.compile(r"\n[ \t]*\[[^\]\n]*[\"']")


@dataclass(frozen=True, slots=True)
class Splice:
    """An edited text, and what the edit put in or took out: the ``[[addresses]]`` tables'
    text (``blocks``) and the entries they must mean (``entries``)."""

    text: str
    blocks: tuple[str, ...]
    entries: tuple[SupportAddress, ...]
    version: int = 1  # the profile's, which the tables are read under


def splice_means(splice: Splice) -> bool:
    """The tables the edit added or cut, read back on their own, are exactly its entries."""
    data = tomlread.loads("\n".join(splice.blocks))
    tables = {"version": splice.version, "addresses": data.get("addresses", [])}
    reread, findings = profile_from_data(tables)
    return not findings and set(data) <= {"addresses"} and reread.addresses == splice.entries


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
    if len(after.addresses) >= len(before.addresses):
        return None
    kept = {e.address.key for e in after.addresses}
    indexes = [i for i, e in enumerate(before.addresses) if e.address.key not in kept]
    gone = set(indexes)
    remaining = tuple(e for i, e in enumerate(before.addresses) if i not in gone)
    if not indexes or remaining != after.addresses:
        return None
    return indexes


def _unsure(text: str) -> bool:
    return '"""' in text or "'''" in text or _QUOTED_HEADER.search("\n" + text) is not None


def _entry_starts(text: str) -> list[int]:
    """Where each ``[[addresses]]`` header line starts."""
    # A match starts at the newline before its line: in ``text`` that offset is the line's own.
    return [m.start() for m in _ENTRY_HEADER.finditer("\n" + text)]


def _table_name(header: re.Match[str]) -> str:
    """A header's dotted name with the whitespace TOML allows around the dots removed."""
    return re.sub(r"[ \t]+", "", header.group(2))


def _entry_end(text: str, start: int) -> int:
    """Where the ``[[addresses]]`` table starting at ``start`` ends (its sub-tables included);
    the comment and blank lines just before the next header stay with that header."""
    for header in _HEADER.finditer(text, start + 1):
        if not _table_name(header).startswith(_ADDRESSES + "."):
            return _before_leading_comments(text, start, header.start())
    return len(text)


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
    return len(text) if last_entry is None else _entry_end(text, last_entry)


def _append(text: str, before: Profile, after: Profile, last_entry: int | None) -> Splice:
    offset = _insert_offset(text, last_entry)
    head, rest = text[:offset].rstrip("\n"), text[offset:].lstrip("\n")
    entries = after.addresses[len(before.addresses) :]
    block = tables_text(entries)
    body = (head + "\n\n" if head else "") + block
    if last_entry is None:
        return Splice(body + ("\n" + rest if rest else ""), (block,), entries, after.version)
    # The last table is read back with the new ones: had a sub-table of it been taken for
    # the end of the array, the new tables would sit between the two and it would read short.
    last = text[last_entry:offset]
    blocks, meant = (last, block), (before.addresses[-1], *entries)
    return Splice(body + ("\n" + rest if rest else ""), blocks, meant, after.version)


def _cut(text: str, before: Profile, indexes: list[int]) -> Splice | None:
    starts = _entry_starts(text)
    if len(starts) != len(before.addresses):
        return None  # the array is not (only) written as [[addresses]] tables
    blocks: list[str] = []
    for index in sorted(indexes, reverse=True):
        start = starts[index]
        end = _entry_end(text, start)
        blocks.insert(0, text[start:end])
        head, rest = text[:start].rstrip("\n"), text[end:].lstrip("\n")
        # Keep one blank line where the table was, as the merge does; no other byte changes.
        text = head + ("\n\n" + rest if rest and head else rest if rest else "")
    edited = text.rstrip("\n") + "\n"
    gone = tuple(before.addresses[i] for i in sorted(indexes))
    return Splice(edited, tuple(blocks), gone, before.version)


def edit_text(text: str, before: Profile, after: Profile) -> Splice | None:
    """``text`` (which means ``before``) changed to mean ``after`` by appending or cutting
    ``[[addresses]]`` tables only; ``None`` when the change is not of that kind."""
    if not _same_settings(before, after) or _unsure(text):
        return None
    appended = _appended(before, after)
    if appended is not None:
        starts = _entry_starts(text)
        if len(starts) != len(before.addresses):
            return None  # an inline `addresses = [...]` cannot take a [[addresses]] table
        return _append(text, before, after, starts[-1] if starts else None)
    removed = _removed(before, after)
    if removed is not None:
        return _cut(text, before, removed)
    return None
