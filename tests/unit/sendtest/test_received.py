"""Reading the relay's copy of a test message: tag, trace line, Authentication-Results, Maildir."""

from __future__ import annotations

import os
import time
from pathlib import Path

from smtpconn.sendtest.received import (
    MaildirWatch,
    describe_received,
    parse_authentication_results,
    parse_received_from,
    parse_tag,
)

RELAY_COPY = (
    b"X-Smtpconn-Tag: authenticated; mode=bidirectional\r\n"
    b"Authentication-Results: relay.helpdesk.test; spf=pass smtp.mailfrom=helpdesk.test"
    b" (client-ip=127.0.0.1);\r\n\tdkim=pass header.d=helpdesk.test;\r\n"
    b"\tdkim=fail header.d=other.test;\r\n\tdmarc=pass (p=reject) header.from=helpdesk.test\r\n"
    b"Received: from mail.good.test ([127.0.0.1])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
    b"\tby relay.helpdesk.test (smtpconn) with ESMTPSA id 0179.ab\r\n"
    b"\tfor <support@helpdesk.test>; Wed, 25 Nov 2026 21:28:07 +0000\r\n"
    b"Authentication-Results: evil.test; spf=pass; dkim=pass; dmarc=pass\r\n"
    b"Received: from [10.0.0.1] (unknown [192.0.2.7]) by mail.good.test (Postfix)\r\n"
    b"X-Smtpconn-Test: smtpconn-0123456789abcdef\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=helpdesk.test; s=sel2048; b=abc\r\n"
    b"Subject: test\r\n"
    b"\r\n"
    b"body\r\n"
)


def test_tag_grammar() -> None:
    assert parse_tag("authenticated; mode=bidirectional") == {
        "tag": "authenticated",
        "mode": "bidirectional",
    }
    assert parse_tag("Unauthenticated;mode=outbound-only; origin=relay-dsn") == {
        "tag": "unauthenticated",
        "mode": "outbound-only",
        "origin": "relay-dsn",
    }


def test_received_from_names_the_connecting_server() -> None:
    assert parse_received_from("from mail.good.test ([127.0.0.1])\r\n\tby x") == {
        "address": "127.0.0.1",
        "helo": "mail.good.test",
    }
    assert parse_received_from("from [10.0.0.1] (unknown [IPv6:2001:db8::1]) by x") == {
        "address": "2001:db8::1",
        "helo": "[10.0.0.1]",
        "reverse_name": "unknown",
    }
    assert parse_received_from("by relay (smtpconn) with ESMTP") is None


def test_authentication_results_methods_and_properties() -> None:
    server, methods = parse_authentication_results(
        "relay.helpdesk.test; spf=softfail smtp.mailfrom=a.test (client-ip=192.0.2.1);"
        " dkim=none; dmarc=fail (p=reject) header.from=a.test"
    )
    assert server == "relay.helpdesk.test"
    assert methods["spf"] == {
        "result": "softfail",
        "smtp.mailfrom": "a.test",
        "comment": "client-ip=192.0.2.1",
    }
    assert methods["dkim"] == [{"result": "none"}]
    assert methods["dmarc"] == {"result": "fail", "header.from": "a.test", "comment": "p=reject"}


def test_describe_believes_only_the_relays_own_results() -> None:
    described = describe_received(RELAY_COPY, "relay.helpdesk.test")
    assert described["tag"] == {"tag": "authenticated", "mode": "bidirectional"}
    assert described["token_header"] == "smtpconn-0123456789abcdef"
    assert described["sending_server"] == {"address": "127.0.0.1", "helo": "mail.good.test"}
    auth = described["authentication"]
    assert auth["spf"]["result"] == "pass"
    assert [(d["result"], d["header.d"]) for d in auth["dkim"]] == [
        ("pass", "helpdesk.test"),
        ("fail", "other.test"),
    ]
    assert auth["dmarc"]["result"] == "pass"
    assert len(described["authentication_results"]) == 2  # both reported raw
    assert described["dkim_signature_present"] is True
    assert all("\t" not in h and "\r" not in h for h in described["received"])

    # A copy that only carries somebody else's verdicts proves nothing.
    assert describe_received(RELAY_COPY, "other-relay.test")["authentication"] is None


def test_untagged_copy() -> None:
    described = describe_received(b"Subject: x\r\n\r\nbody\r\n", "relay.test")
    assert described["tag"] is None and described["sending_server"] is None
    assert described["authentication"] is None and described["authentication_results"] == []


def test_maildir_watch_finds_the_token_once_and_skips_old_mail(tmp_path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    old = tmp_path / "cur" / "old:2,S"
    old.write_bytes(b"Subject: smtpconn-token\r\n\r\n")
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    watch = MaildirWatch(tmp_path, "smtpconn-token")
    assert watch.poll() is None  # an hour-old message cannot carry a token made just now
    other = tmp_path / "new" / "other"
    other.write_bytes(b"Subject: something else\r\n\r\n")
    assert watch.poll() is None
    mine = tmp_path / "new" / "mine"
    mine.write_bytes(b"X-Smtpconn-Test: smtpconn-token\r\n\r\n")
    assert watch.poll() == mine
    # Folders (Maildir++) are searched too.
    nested = tmp_path / ".Support" / "new"
    nested.mkdir(parents=True)
    (nested / "x").write_bytes(b"smtpconn-other-token")
    assert MaildirWatch(tmp_path, "smtpconn-other-token").poll() == nested / "x"
