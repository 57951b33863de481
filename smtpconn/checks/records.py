"""Presenting the DNS records we tell people to publish, in zone-file syntax they can paste.

TXT data longer than 255 bytes must be split into several character-strings (RFC 1035 §3.3.14);
receivers join them without a separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2), so we split at
exactly 255 bytes and never add spaces.
"""

from __future__ import annotations

MAX_STRING = 255


def split_txt(text: str, size: int = MAX_STRING) -> list[str]:
    data = text.encode("utf-8")
    return [data[i : i + size].decode("utf-8") for i in range(0, len(data), size)] or [""]


def quote(string: str) -> str:
    return '"' + string.replace("\\", "\\\\").replace('"', '\\"') + '"'


def txt_record(name: str, text: str) -> str:
    """``name. TXT "…" "…"`` with each string at most 255 bytes."""
    return f"{fqdn(name)} TXT " + " ".join(quote(s) for s in split_txt(text))


def fqdn(name: str) -> str:
    return name.rstrip(".") + "."
