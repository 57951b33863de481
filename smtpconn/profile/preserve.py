"""Apply a new profile to the existing file's text, keeping the administrator's comments and
layout wherever the data did not change.

A profile is meant to be edited by hand as well as by smtpconn; rewriting it from scratch on every
``add-address`` would silently drop the comments people leave in it. tomlkit keeps them; when the
merge can't be proven to mean exactly the new profile, the caller falls back to a clean render.
"""

from __future__ import annotations

import re
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, InlineTable, Table

_Mergeable = Container | Table | InlineTable


def _merge_aot(old: AoT, new: list[dict[str, Any]]) -> AoT:
    """Keep each existing [[addresses]] table (and its comments) whose address is still there."""
    by_address: dict[str, Table] = {}
    for existing in old.body:
        address = existing.unwrap().get("address")
        if isinstance(address, str):
            by_address[address] = existing
    merged = tomlkit.aot()
    for item in new:
        kept = by_address.pop(str(item.get("address")), None)
        if kept is None:
            merged.append(item)
        else:
            _merge_into(kept, item)
            merged.append(kept)
    return merged


def _merge_into(target: _Mergeable, new: dict[str, Any]) -> None:
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        if key not in target:
            target[key] = value
            continue
        current = target[key]
        if isinstance(value, dict) and isinstance(current, Table | InlineTable):
            _merge_into(current, value)
        elif isinstance(value, list) and isinstance(current, AoT):
            target[key] = _merge_aot(current, value)
        elif _unwrap(current) != value:
            target[key] = value


def _unwrap(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def merge_text(previous: str, data: dict[str, Any]) -> str:
    document = tomlkit.parse(previous)
    _merge_into(document, data)
    # Removing tables leaves their blank separator lines behind; without this, every
    # add/remove cycle would grow the file. (The caller re-checks the meaning of the result.)
    return re.sub(r"\n{3,}", "\n\n", tomlkit.dumps(document))
