"""The one tag-list parser (RFC 6376 §3.2) and the X-Smtpconn-Tag header built on it."""

from __future__ import annotations

from smtpconn.dns.tags import parse_tags
from smtpconn.message.tag import parse_tag as parse_tag_header
from smtpconn.message.tag import tag_value


def test_names_are_lowercased_and_the_last_repeat_wins() -> None:
    assert parse_tags("v=DMARC1; P=reject; p=none") == {"v": "DMARC1", "p": "none"}


def test_parts_without_equals_and_empty_parts_are_skipped() -> None:
    assert parse_tags("v=STSv1;; junk ; id=2024;") == {"v": "STSv1", "id": "2024"}


def test_values_lose_inner_white_space_unless_kept() -> None:
    folded = "k=rsa; p=AB CD\r\n EF"
    assert parse_tags(folded)["p"] == "ABCDEF"
    assert parse_tags("note = two words ;", keep_spaces=True) == {"note": "two words"}


def test_the_tag_header_starts_with_a_bare_word() -> None:
    assert parse_tag_header("Unauthenticated;mode=outbound-only; origin=relay-dsn") == {
        "tag": "unauthenticated",
        "mode": "outbound-only",
        "origin": "relay-dsn",
    }
    assert parse_tag_header(" ; authenticated") == {"tag": "authenticated"}


def test_the_tag_header_reads_what_the_relay_writes() -> None:
    written = tag_value(True, "bidirectional", "relay-dsn")
    assert parse_tag_header(written) == {
        "tag": "authenticated",
        "mode": "bidirectional",
        "origin": "relay-dsn",
    }
