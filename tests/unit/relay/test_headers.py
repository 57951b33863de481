"""What the relay writes: the header splitter (CR, LF, CRLF), the RFC 8601 authserv-id parser,
the escaping of envelope values in headers and of every field in the log."""

from __future__ import annotations

import email
import time
from pathlib import Path

import pytest

from smtpconn.message.authserv import Unparsable, claims, parse_head
from smtpconn.message.escaping import escape_controls
from smtpconn.message.headers import split_header_block
from smtpconn.relay.authres import AuthVerdicts, pvalue
from smtpconn.relay.config import build_config
from smtpconn.relay.handover import SinkHandover
from smtpconn.relay.log import format_event
from smtpconn.relay.sinks.base import SinkError, SinkItem
from smtpconn.relay.sinks.pipe import environment
from smtpconn.relay.spool import Envelope, Spool
from smtpconn.relay.tagging import return_path, safe_address, strip_untrusted
from smtpconn.sendtest.received import parse_authentication_results
from tests.unit.relay.test_relay_units import profile

OURS = "relay.helpdesk.test"
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029"]

# -- the splitter -------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_fields_and_body_split_at_any_line_end(end: bytes) -> None:
    raw = b"A: 1" + end + b"B: 2" + end + b" folded" + end + end + b"body" + end
    fields, rest = split_header_block(raw)
    assert fields == [b"A: 1" + end, b"B: 2" + end + b" folded" + end]
    assert rest == end + b"body" + end


def test_bare_cr_ends_fields_and_the_block_is_never_ended_early() -> None:
    # CR-only: Python's email sees three fields; an LF reader sees one long line. Every
    # CR-separated field is checked, and the block does not end where only one reader says so.
    raw = b"A: 1\rX-Smtpconn-Tag: authenticated\rB: 2\r folded\r\rbody\r"
    fields, _ = split_header_block(raw)
    assert fields[:3] == [b"A: 1\r", b"X-Smtpconn-Tag: authenticated\r", b"B: 2\r folded\r\rbody\r"]
    assert strip_untrusted(raw, OURS) == b"A: 1\rB: 2\r folded\r\rbody\r"


def test_a_field_behind_a_bare_cr_is_its_own_field_and_a_forged_tag_there_is_dropped() -> None:
    raw = b"X-Note: hi\rX-Smtpconn-Tag: authenticated; mode=bidirectional\r\nSubject: s\r\n\r\nb"
    fields, _ = split_header_block(raw)
    assert fields == [
        b"X-Note: hi\r",
        b"X-Smtpconn-Tag: authenticated; mode=bidirectional\r\n",
        b"Subject: s\r\n",
    ]
    clean = strip_untrusted(raw, OURS)
    assert b"Smtpconn-Tag" not in clean
    assert clean == b"X-Note: hi\rSubject: s\r\n\r\nb"


def test_a_non_header_line_behind_a_bare_cr_does_not_end_the_block() -> None:
    # An LF reader sees "X-A: 1\rjunk" as one field and the tag below as a header: so do we.
    raw = b"X-A: 1\rjunk\r\nX-Smtpconn-Tag: authenticated\r\n\r\nbody"
    clean = strip_untrusted(raw, OURS)
    assert clean == b"X-A: 1\rjunk\r\n\r\nbody"
    raw = b"X-A: 1\r\rjunk\nX-Smtpconn-Tag: authenticated\n\nbody"
    assert b"Smtpconn-Tag" not in strip_untrusted(raw, OURS)


@pytest.mark.parametrize(
    "forged",
    [
        b"X-Smtpconn-Tag: authenticated\r\n",
        b"x-smtpconn-tag: authenticated\r\n",
        b"X-SMTPCONN-TAG:authenticated\r\n",
        b"X-Smtpconn-Tag : authenticated\r\n",
        b"X-Smtpconn-Tag\t: authenticated\r\n",
        b"X-Smtpconn-Tag:\r\n authenticated;\r\n\tmode=bidirectional\r\n",
        b"X-Smtpconn-Tag: authenticated\r",
        b"X-Smtpconn-Tag: authenticated\n",
    ],
)
def test_forged_tags_in_every_spelling_are_dropped(forged: bytes) -> None:
    raw = b"From: a@b.example\r\n" + forged + b"Subject: s\r\n\r\nX-Smtpconn-Tag: body\r\n"
    clean = strip_untrusted(raw, OURS)
    assert clean == b"From: a@b.example\r\nSubject: s\r\n\r\nX-Smtpconn-Tag: body\r\n"


def test_the_body_after_the_blank_line_is_untouched() -> None:
    raw = b"Subject: s\r\n\r\nX-Smtpconn-Tag: authenticated\r\nAuthentication-Results: x\r\n"
    assert strip_untrusted(raw, OURS) == raw


# -- the authserv-id parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        f"{OURS}; dkim=pass",
        f"{OURS} 1; dkim=pass; dmarc=pass",
        f"{OURS}  12 ; dkim=pass",
        f"(trusted) {OURS}; dkim=pass",
        f"(a (nested (comment)) \\) here) {OURS}; spf=pass",
        f'"{OURS}"; spf=pass',
        '"relay.helpdesk\\.test" 1; spf=pass',
        f"{OURS.upper()}; spf=pass",
        "Relay.HelpDesk.Test.; spf=pass",
        f"  \t{OURS} (comment) 1 (another); spf=pass",
        f"{OURS}(c)1; spf=pass",
        f"{OURS}",
        f"{OURS}; none",
    ],
)
def test_every_header_claiming_our_id_is_recognised(value: str) -> None:
    assert claims(value, OURS)
    raw = f"Authentication-Results: {value}\r\nSubject: s\r\n\r\n".encode()
    assert strip_untrusted(raw, OURS) == b"Subject: s\r\n\r\n"


@pytest.mark.parametrize(
    "value",
    [
        f"{OURS}.evil; dkim=pass",
        f"evil.{OURS}; dkim=pass",
        f"mx.other.example; dkim=pass header.d={OURS}",
        f'"{OURS} x"; dkim=pass',
        f"(from {OURS}) mx.other.example; spf=pass",
    ],
)
def test_other_ids_are_kept(value: str) -> None:
    assert not claims(value, OURS)


@pytest.mark.parametrize(
    "value",
    [f"({OURS}; dkim=pass", f'"{OURS}; dkim=pass', f"{OURS}/x; dkim=pass", f"; {OURS}"],
)
def test_unparsable_values_that_mention_our_id_are_removed(value: str) -> None:
    with pytest.raises(Unparsable):
        parse_head(value)
    assert claims(value, OURS)
    assert not claims("(broken; dkim=pass", OURS)


def test_the_version_and_the_rest_are_parsed() -> None:
    head = parse_head(f"(c) {OURS} (v) 1 (x); spf=pass")
    assert (head.authserv_id, head.version, head.rest) == (OURS, 1, "; spf=pass")


def test_send_test_reads_the_authserv_id_through_comments_and_versions() -> None:
    server, methods = parse_authentication_results(f"(c) {OURS.upper()} 1; spf=pass")
    assert server == OURS and methods["spf"]["result"] == "pass"


# -- envelope values in headers -----------------------------------------------------------------


@pytest.mark.parametrize("char", CONTROLS)
def test_no_control_character_reaches_return_path(char: str) -> None:
    for address in (f"a{char}b@x.example", f"ab@x{char}y.example", f"a{char}"):
        line = return_path(address)
        assert escape_controls(line) == line
        assert ">" not in line[:-1]


def test_return_path_keeps_good_addresses_and_quotes_bad_local_parts() -> None:
    assert return_path("") == "Return-Path: <>"
    assert return_path("a.b+c@x.example") == "Return-Path: <a.b+c@x.example>"
    assert return_path('"john doe"@x.example') == 'Return-Path: <"john doe"@x.example>'
    assert return_path("jöhn@bücher.example") == "Return-Path: <jöhn@bücher.example>"
    assert return_path("a>b@x.example") == 'Return-Path: <"a>b"@x.example>'
    assert safe_address('a"\r\nX-Smtpconn-Tag: y@x') == '"a\\"\\\\r\\\\nX-Smtpconn-Tag: y"@x'
    assert safe_address("a@x\r\ny") == "a@x\\x0d\\x0ay"


def test_a_forged_tag_in_the_sender_is_not_a_header_for_pythons_email() -> None:
    line = return_path("x@y\rX-Smtpconn-Tag: authenticated; mode=bidirectional\r\n")
    parsed = email.message_from_bytes(line.encode() + b"\r\nSubject: s\r\n\r\n")
    assert parsed.get_all("X-Smtpconn-Tag") is None
    assert "\r" not in str(parsed["Return-Path"])


def test_authentication_results_values_cannot_add_results() -> None:
    assert pvalue("example.com") == "example.com"
    assert pvalue("postmaster@h.example") == "postmaster@h.example"
    assert pvalue("x; dkim=pass") == '"x; dkim=pass"'
    assert pvalue('a"\r\n') == '"a\\"\\\\r\\\\n"'
    verdicts = AuthVerdicts(
        spf="pass",
        spf_domain="postmaster@h; dmarc=pass",
        dkim=[("fail", "d.example; dkim=pass")],
        dmarc="none",
        dmarc_policy="reject); dmarc=pass (",
        from_domain="f.example\r\nX-Smtpconn-Tag: authenticated",
        spf_helo="h; dmarc=pass",
    )
    header = verdicts.header(OURS, "192.0.2.1")
    _, methods = parse_authentication_results(header.partition(":")[2])
    assert set(methods) == {"spf", "dkim", "dmarc"}
    assert [d["result"] for d in methods["dkim"]] == ["fail"]
    assert methods["dmarc"]["result"] == "none"
    assert escape_controls(header.replace("\r\n\t", " ")) == header.replace("\r\n\t", " ")


# -- the log ------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", CONTROLS)
def test_no_log_field_carries_a_raw_control_character(char: str) -> None:
    line = format_event("x", {"helo": f"a{char}b", "plain": char, "n": 1})
    assert escape_controls(line) == line
    assert "\n" not in line and "\r" not in line


def test_log_escapes_are_readable_and_unambiguous() -> None:
    line = format_event("x", {"v": 'a\r\n\x1b[2J\x00\x7f "\\'})
    assert line == 'event=x v="a\\r\\n\\x1b[2J\\x00\\x7f \\"\\\\"'


# -- the pipe environment -----------------------------------------------------------------------


def test_pipe_environment_is_minimal_and_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPCONN_SECRET_PW", "hunter2")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    item = SinkItem(
        "1.a", "a\r\nb@x", "s@y", b"", meta={"tag": "authenticated", "other": "x", "tls": 1}
    )
    env = environment(item)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "SMTPCONN_ID": "1.a",
        "SMTPCONN_MAIL_FROM": "a\\r\\nb@x",
        "SMTPCONN_RCPT": "s@y",
        "SMTPCONN_TAG": "authenticated",
        "SMTPCONN_TLS": "1",
    }


def test_pipe_environment_refuses_a_nul_permanently() -> None:
    with pytest.raises(SinkError) as caught:
        environment(SinkItem("1.a", "a\x00b@x", "s@y", b""))
    assert caught.value.permanent and "mail_from" in str(caught.value)


# -- hand-over: an error the message causes holds it --------------------------------------------


async def test_a_sink_raising_on_a_message_holds_it_and_the_null_sender_is_empty(
    tmp_path: Path,
) -> None:
    config = build_config(profile(), tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    seen: list[str] = []

    class Fragile:
        kind = "fragile"

        async def deliver(self, item: SinkItem) -> None:
            seen.append(item.mail_from)
            if item.mail_from:
                raise ValueError("embedded null byte")

    handover = SinkHandover(config, spool, Fragile())
    bad, null = spool.put_many(
        [
            (Envelope("inbound", "a\x00@x.test", ("r@x.test",), time.time()), b"m", None),
            (Envelope("inbound", "<>", ("r@x.test",), time.time()), b"m", None),
        ]
    )
    outcome = await handover(bad)
    state = spool.state(bad)
    assert outcome.state is not None and outcome.state.held
    assert state.held and state.attempts == 1
    assert "ValueError: embedded null byte" in (state.last_error or "")
    assert (await handover(null)).state is None  # delivered, with the null sender as ""
    assert seen == ["a\x00@x.test", ""]
