"""What ``send-test`` learns from the copy of a test message that reached the relay's sink.

* :class:`MaildirWatch` finds the message carrying a token in the relay's Maildir sink. Maildir
  files never change once delivered, so each file is read at most once, and files older than the
  watch are skipped: polling stays cheap beside a help desk's full mailbox.
* :func:`describe_received` reads the headers the relay put on top: the tag, its own
  ``Received`` line (which names the server that really handed the message over) and its own
  ``Authentication-Results`` (SPF, DKIM, DMARC as received). Headers claiming another authserv-id
  are reported raw but not believed.
* :func:`verify_dkim` checks the received copy's signature independently of the relay.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path
from typing import Any

from smtpconn.message.authserv import Unparsable, normalise_id, parse_head, split_top_level
from smtpconn.message.headers import unfold
from smtpconn.message.tag import TAG_HEADER, parse_tag
from smtpconn.sendtest.testmessage import TOKEN_HEADER
from smtpconn.settings import Settings

CLOCK_SLACK = 5.0  # seconds: a file this much older than the watch cannot hold the new token

_RECEIVED_FROM = re.compile(r"^from\s+(?P<helo>\S+)\s+\((?:(?P<rdns>\S+)\s+)?\[(?P<ip>[^\]]+)\]")
_METHOD = re.compile(r"^(?P<method>[a-z][a-z0-9-]*)\s*=\s*(?P<result>[a-z]+)(?P<rest>.*)$", re.I)
_PROPERTY = re.compile(r"(?P<key>[a-z]+\.[a-z0-9._-]+)\s*=\s*(?P<value>[^\s;()]+)", re.I)
_COMMENT = re.compile(r"\(([^()]*)\)")


class MaildirWatch:
    """Look for a token in the Maildir tree under ``root`` (``new/`` and ``cur/``, any folder)."""

    def __init__(self, root: Path, token: str, *, since: float | None = None) -> None:
        self.root = root
        self.token = token.encode()
        self.since = time.time() if since is None else since
        self._seen: set[str] = set()

    def poll(self) -> Path | None:
        for sub in ("new", "cur"):
            for path in self.root.glob(f"**/{sub}/*"):
                name = str(path)
                if name in self._seen:
                    continue
                self._seen.add(name)
                try:
                    if path.stat().st_mtime < self.since - CLOCK_SLACK:
                        continue
                    if self.token in path.read_bytes():
                        return path
                except OSError:
                    # Read or moved (new/ -> cur/) meanwhile: it comes back under its new name.
                    continue
        return None


def parse_received_from(value: str) -> dict[str, str] | None:
    """The ``from HELO ([ip])`` part of a Received line (RFC 5321 §4.4)."""
    match = _RECEIVED_FROM.match(unfold(value))
    if match is None:
        return None
    found = {"address": match["ip"].removeprefix("IPv6:"), "helo": match["helo"]}
    if match["rdns"]:
        found["reverse_name"] = match["rdns"]
    return found


def parse_authentication_results(value: str) -> tuple[str, dict[str, Any]]:
    """(authserv-id, {"spf": {...}, "dkim": [{...}, …], "dmarc": {...}}) of one header (RFC 8601).

    Each result is {"result": …} plus its properties (``smtp.mailfrom``, ``header.d`` …) and
    its comments joined as ``comment``.
    """
    parts = [p.strip() for p in split_top_level(unfold(value))]
    try:
        # Through comments, quotes and a version number, as the relay strips them.
        authserv_id = normalise_id(parse_head(unfold(value)).authserv_id)
    except Unparsable:
        authserv_id = ""
    methods: dict[str, Any] = {}
    for part in parts[1:]:
        match = _METHOD.match(part)
        if match is None:
            continue
        entry: dict[str, str] = {"result": match["result"].lower()}
        rest = match["rest"]
        comments = _COMMENT.findall(rest)
        entry.update(
            {m["key"].lower(): m["value"] for m in _PROPERTY.finditer(_COMMENT.sub("", rest))}
        )
        if comments:
            entry["comment"] = "; ".join(c.strip() for c in comments)
        method = match["method"].lower()
        if method == "dkim":
            methods.setdefault("dkim", []).append(entry)
        else:
            methods.setdefault(method, entry)
    return authserv_id, methods


def describe_received(raw: bytes, authserv_id: str | None) -> dict[str, Any]:
    """What the relay's copy says. ``authserv_id`` is the relay's host name (``[relay]
    hostname``); only its own ``Authentication-Results`` are believed (None: the topmost)."""
    # Python's parser, not message.headers.split_header_block: the two disagree on odd header
    # blocks (a space before the colon, a line behind a bare CR), so switching would change what
    # send-test reports.
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    tag_value = parsed.get(TAG_HEADER)
    received = [unfold(str(h)) for h in parsed.get_all("Received") or []]
    results_raw = [unfold(str(h)) for h in parsed.get_all("Authentication-Results") or []]
    authentication: dict[str, Any] | None = None
    for header in results_raw:
        server, methods = parse_authentication_results(header)
        if authserv_id is None or server == authserv_id.lower():
            authentication = methods
            break
    return {
        "tag": parse_tag(str(tag_value)) if tag_value else None,
        "tag_header": unfold(str(tag_value)) if tag_value else None,
        "token_header": unfold(str(parsed.get(TOKEN_HEADER) or "")),
        # The relay's own trace line is on top: it names who really connected.
        "sending_server": parse_received_from(received[0]) if received else None,
        "received": received[:3],
        "authentication": authentication,
        "authentication_results": results_raw,
        "dkim_signature_present": parsed.get("DKIM-Signature") is not None,
    }


def verify_dkim(
    raw: bytes, settings: Settings, expect: tuple[str, str] | None = None
) -> dict[str, Any]:
    """Verify the received copy's DKIM signature ourselves, against the configured resolver:
    the first one, or the one of ``expect`` = (domain, selector) when given."""
    import dkim as dkimpy
    import dns.exception
    import dns.resolver

    from smtpconn.dns.resolvers import make_sync_resolver

    resolver = make_sync_resolver(settings.resolvers, timeout=settings.timeout)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", search=False)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer[:1])

    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    signatures = message.get_all("DKIM-Signature") or []
    if not signatures:
        return {"result": "none", "detail": "the received copy carries no DKIM signature"}
    if expect is not None:
        return _verify_expected(raw, signatures, expect, dnsfunc)
    try:
        ok = bool(dkimpy.verify(raw, dnsfunc=dnsfunc))
    except Exception as exc:  # dkimpy raises several unrelated types for malformed input
        return {"result": "permerror", "detail": str(exc)}
    return {"result": "pass" if ok else "fail", "detail": ""}


def _verify_expected(
    raw: bytes, signatures: list[str], expect: tuple[str, str], dnsfunc: Any
) -> dict[str, Any]:
    """Verify the signature with d= and s= as ``expect`` (domain, selector), wherever it is
    among the message's signatures (a server that signs adds its own above any other)."""
    import dkim as dkimpy

    from smtpconn.dns.tags import parse_tags

    domain, selector = expect[0].lower(), expect[1].lower()
    for index, header in enumerate(signatures):
        tags = parse_tags(unfold(header))
        if (tags.get("d", "").lower(), tags.get("s", "").lower()) != (domain, selector):
            continue
        try:
            ok = bool(dkimpy.DKIM(raw).verify(idx=index, dnsfunc=dnsfunc))
        except dkimpy.ValidationError as exc:  # e.g. the body hash differs: a failed signature
            return {"result": "fail", "detail": str(exc), "d": domain, "s": selector}
        except Exception as exc:  # dkimpy raises several unrelated types for malformed input
            return {"result": "permerror", "detail": str(exc), "d": domain, "s": selector}
        return {"result": "pass" if ok else "fail", "detail": "", "d": domain, "s": selector}
    seen = ", ".join(
        f"d={t.get('d', '?')} s={t.get('s', '?')}" for t in map(parse_tags, map(unfold, signatures))
    )
    return {
        "result": "none",
        "detail": f"no DKIM signature with d={domain} s={selector} (found: {seen})",
        "d": domain,
        "s": selector,
    }
