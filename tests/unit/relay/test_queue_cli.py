"""``smtpconn queue``: readable in an 80-column terminal, short ids, unknown ids refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpconn.cli.app import app
from smtpconn.relay.spool import Envelope, Spool

LONG_ERROR = (
    "mail.good.test:51019 connect stage: could not connect to 127.0.0.1:51019: "
    "[Errno 111] Connection refused (is the server running?)"
)
LONG_RCPT = "customer.with.a.rather.long.name@some-company-with-a-long-domain.example.com"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    now = time.time()
    spool.put(Envelope("outbound", "support@example.com", (LONG_RCPT,), now), b"S: 1\r\n\r\nx\r\n")
    spool.put(
        Envelope("outbound", "support@example.com", ("a@x.test", "b@y.test"), now),
        b"S: 2\r\n\r\nx\r\n",
    )
    spool.put(
        Envelope("inbound", "evil\x1b[31m@x.test", ("support@example.com",), now),
        b"S: 3\r\n\r\nx\r\n",
    )
    for n, entry in enumerate([*spool.entries("outbound"), *spool.entries("inbound")]):
        state = spool.state(entry)
        state.attempts = n + 1
        state.next_attempt = now + 600
        state.last_error = LONG_ERROR + "\x1b]0;title\x07"
        state.held = entry.envelope.direction == "inbound"
        spool.save_state(entry, state)
    return spool


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["queue", *args], env={"COLUMNS": "80"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_list_fits_80_columns_with_one_line_per_message_and_its_error(spool: Spool) -> None:
    code, output = _run("list", "--spool", str(spool.directory))
    assert code == 0, output
    lines = output.splitlines()
    assert all(len(line) <= 80 for line in lines), output
    assert lines[0].split() == ["ID", "DIR", "STATUS", "TRIES", "NEXT", "RECIPIENT"]
    assert len(lines) == 1 + 3 * 2  # a summary line and an error line per message
    outbound = next(e for e in spool.entries("outbound") if e.envelope.rcpts == (LONG_RCPT,))
    short = outbound.id.rpartition(".")[2]
    summary = next(line for line in lines if line.startswith(short))
    assert summary.split()[1:5] == ["out", "deferred", "1", "in"]
    assert summary.endswith("\u2026") and LONG_RCPT[:20] in summary
    assert any(line.split()[-2:] == ["a@x.test", "(+1)"] for line in lines)
    assert any(" in " in f" {line} " and "held" in line for line in lines)
    assert "connect stage: could not connect" in output
    assert "\x1b" not in output and "\x07" not in output  # remote text cannot drive the terminal


def test_verbose_shows_full_ids_senders_and_errors(spool: Spool) -> None:
    code, output = _run("list", "--spool", str(spool.directory), "-v")
    assert code == 0
    for entry in [*spool.entries("outbound"), *spool.entries("inbound")]:
        assert entry.id in output
    assert LONG_RCPT in output and "(is the server running?)" in output
    assert "from support@example.com" in output and "to a@x.test, b@y.test" in output


def test_json_carries_full_and_short_ids(spool: Spool) -> None:
    code, output = _run("list", "--spool", str(spool.directory), "--json")
    assert code == 0
    items = json.loads(output)["messages"]
    assert len(items) == 3
    assert all(i["id"].endswith("." + i["short_id"]) for i in items)


def test_retry_and_delete_accept_the_short_id(spool: Spool) -> None:
    held = next(spool.entries("inbound"))
    code, output = _run("retry", held.id.rpartition(".")[2], "--spool", str(spool.directory))
    assert code == 0, output
    assert not spool.state(held).held
    code, output = _run("delete", held.id.rpartition(".")[2], "--spool", str(spool.directory))
    assert code == 0, output
    assert list(spool.entries("inbound")) == []


@pytest.mark.parametrize("action", ["retry", "delete"])
def test_unknown_or_ambiguous_ids_change_nothing_and_exit_2(spool: Spool, action: str) -> None:
    before = {e.id: spool.state(e) for d in ("inbound", "outbound") for e in spool.entries(d)}
    known = next(iter(before))
    common_prefix = known[:6]  # every id starts with the same time digits
    for ids, message in (
        (["no-such-id"], "no message 'no-such-id'"),
        ([known, "deadbeef"], "no message 'deadbeef'"),  # one bad id: none is touched
        ([common_prefix], "matches 3 messages"),
        (["abc"], "no message 'abc'"),  # too short to match anything
    ):
        code, output = _run(action, *ids, "--spool", str(spool.directory))
        assert code == 2, output
        assert message in output and "Traceback" not in output
    after = {e.id: spool.state(e) for d in ("inbound", "outbound") for e in spool.entries(d)}
    assert after == before
