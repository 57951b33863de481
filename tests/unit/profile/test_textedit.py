"""The in-place text edit of the profile means exactly what the full tomlkit merge means, keeps
every comment the merge keeps, and gives way to the merge whenever it cannot edit in place."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpconn.addresses import parse_address
from smtpconn.errors import ProfileError
from smtpconn.profile import store
from smtpconn.profile.model import (
    AuthMechanism,
    InboundCredentials,
    Mode,
    OutboundServer,
    Profile,
    Security,
    SupportAddress,
    Workflow,
    profile_to_data,
)
from smtpconn.profile.secrets import parse_secret_ref
from smtpconn.profile.store import parse_profile, render_profile
from smtpconn.profile.textedit import Splice, edit_text, splice_means, tables_text


def _entry(i: int, kind: int) -> SupportAddress:
    address = parse_address(f"support{i}@d{i % 7}.example.com")
    if kind == 0:
        return SupportAddress(address, Mode.OUTBOUND_ONLY, Workflow.FORWARDING)
    outbound = OutboundServer(
        host=f"mail{i}.example.com",
        port=587,
        security=Security.STARTTLS,
        auth=AuthMechanism.AUTO,
        username=f"user{i}",
        secret=parse_secret_ref("env:SMTP_PASSWORD"),
    )
    if kind == 1:
        return SupportAddress(address, Mode.OUTBOUND_ONLY, Workflow.AUTHENTICATED, outbound)
    inbound = InboundCredentials(username=f"in{i}", password_hash=store_hash())
    return SupportAddress(
        address, Mode.BIDIRECTIONAL, Workflow.AUTHENTICATED, outbound, inbound=inbound
    )


def store_hash() -> str:
    from smtpconn.profile.secrets import hash_password

    global _HASH
    if _HASH is None:
        _HASH = hash_password("not-a-real-password")
    return _HASH


_HASH: str | None = None


def _commented(profile: Profile, comment_every: int) -> str:
    """The clean render with a comment above some tables and at the end of some lines, as an
    administrator leaves them."""
    # Written as [[addresses]] tables as add-address writes them (a clean render of short
    # entries alone is an inline array, which the in-place edit leaves to the merge).
    text = store.HEADER + "version = 1\n\n" + tables_text(profile.addresses)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    seen = 0
    for line in lines:
        if line.startswith("[[addresses]]"):
            if seen % comment_every == 0:
                out.append(f"# note on entry {seen}\n")
            seen += 1
        if line.startswith("host = ") and seen % comment_every == 1:
            line = line.rstrip("\n") + "  # the customer's server\n"
        out.append(line)
    return "".join(out)


def _comments(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if "#" in line}


def _slow(text: str, after: Profile) -> str:
    return render_profile(after, text.encode())


kinds = st.lists(st.integers(0, 2), min_size=0, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    kinds=kinds, added=st.lists(st.integers(0, 2), min_size=1, max_size=3), every=st.integers(1, 4)
)
def test_appending_means_what_the_merge_means_and_keeps_every_comment(
    kinds: list[int], added: list[int], every: int
) -> None:
    before = Profile(addresses=tuple(_entry(i, k) for i, k in enumerate(kinds)))
    after = before
    for j, kind in enumerate(added):
        after = after.with_address(_entry(100 + j, kind))
    text = _commented(before, every)
    splice = edit_text(text, before, after)
    assert splice is not None and splice_means(splice)
    fast = splice.text
    slow = _slow(text, after)
    assert tomllib.loads(fast) == tomllib.loads(slow) == profile_to_data(after)
    assert parse_profile(store.Path("p"), fast.encode()) == after
    assert _comments(text) <= _comments(fast)
    assert fast.startswith(text)  # nothing before the new tables changed by a byte


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    data=st.data(),
    every=st.integers(1, 4),
)
def test_removing_means_what_the_merge_means_and_keeps_the_other_comments(
    kinds: list[int], data: st.DataObject, every: int
) -> None:
    before = Profile(addresses=tuple(_entry(i, k) for i, k in enumerate(kinds)))
    gone = data.draw(st.sets(st.sampled_from(range(len(kinds))), min_size=1))
    after = before
    for index in gone:
        after = after.without_address(before.addresses[index].address)
    text = _commented(before, every)
    splice = edit_text(text, before, after)
    assert splice is not None and splice_means(splice)
    fast = splice.text
    slow = _slow(text, after)
    assert tomllib.loads(fast) == tomllib.loads(slow) == profile_to_data(after)
    # Every comment outside the removed tables' own lines stays (the one above a table belongs
    # to the table that follows it).
    removed_lines = {f"# note on entry {i}" for i in gone}
    assert _comments(text) - _comments(fast) <= removed_lines | {
        'host = "' + f"mail{i}.example.com" + "\"  # the customer's server" for i in gone
    }


def test_a_re_add_or_a_changed_relay_table_is_left_to_the_merge() -> None:
    before = Profile(addresses=(_entry(0, 1), _entry(1, 0)))
    text = render_profile(before)
    readded = before.with_address(_entry(0, 0))
    assert edit_text(text, before, readded) is None
    assert edit_text(text, before, before) is None


def test_an_inline_addresses_array_falls_back_to_the_merge_and_stays_correct() -> None:
    before = Profile(addresses=(_entry(0, 0),))
    text = (
        'version = 1\naddresses = [{address = "support0@d0.example.com", '
        'mode = "outbound-only", workflow = "forwarding"}]  # inline\n'
    )
    assert parse_profile(store.Path("p"), text.encode()) == before
    after = before.with_address(_entry(1, 0))
    assert edit_text(text, before, after) is None
    rendered = render_profile(after, text.encode(), before=before)
    assert parse_profile(store.Path("p"), rendered.encode()) == after


def test_a_header_inside_a_multiline_string_never_corrupts_the_profile() -> None:
    """The text edit may misread a table header hidden in a string; the re-read check catches
    it and the merge takes over."""
    text = 'version = 1\n\n[connector]\nname = """\n[[addresses]]\n"""\n\n' + tables_text(
        (_entry(0, 0), _entry(1, 0))
    )
    before = parse_profile(store.Path("p"), text.encode())
    after = before.without_address(before.addresses[0].address)
    assert edit_text(text, before, after) is None  # multi-line strings: the merge's job
    rendered = render_profile(after, text.encode(), before=before)
    assert parse_profile(store.Path("p"), rendered.encode()) == after


def test_the_splice_check_refuses_tables_that_do_not_mean_the_entries() -> None:
    first, second = _entry(0, 0), _entry(1, 1)
    block = tables_text((first,))
    assert splice_means(Splice("", (block,), (first,)))
    assert not splice_means(Splice("", (block,), (second,)))  # another entry's table
    assert not splice_means(Splice("", (block,), (first, second)))  # a table short
    assert not splice_means(Splice("", (block + '\n[relay]\nhostname = "x"\n',), (first,)))


def test_a_new_table_goes_after_the_last_address_not_after_a_relay_table_that_follows() -> None:
    before = Profile(addresses=(_entry(0, 1), _entry(1, 0)))
    relay = '# the relay\n[relay]\nhostname = "relay.example.com"\n\n[relay.sink]\nkind = "maildir"\npath = "/srv/mail"\n'
    text = "version = 1\n\n" + tables_text(before.addresses) + "\n" + relay
    before = parse_profile(store.Path("p"), text.encode())
    after = before.with_address(_entry(2, 2))
    splice = edit_text(text, before, after)
    assert splice is not None and splice_means(splice)
    fast = splice.text
    assert parse_profile(store.Path("p"), fast.encode()) == after
    assert fast.endswith("\n" + relay)  # the relay table and its comment, untouched and last
    assert fast.index('address = "support2@') < fast.index("# the relay")


def test_a_fresh_render_of_short_entries_is_tables_that_the_next_add_extends_in_place() -> None:
    before = Profile(addresses=(_entry(0, 0),))
    text = render_profile(before)
    assert "[[addresses]]" in text and "addresses = [" not in text
    after = before.with_address(_entry(1, 0))
    assert edit_text(text, before, after) is not None


def test_a_quoted_or_tab_spaced_sub_table_name_never_splits_an_entry_from_its_sub_table() -> None:
    """`["addresses".outbound]` and `[addresses.\toutbound]` are the last entry's sub-table: a
    new table must not go between them (that wrote a profile TOML refuses to read)."""
    for header in ('["addresses".outbound]', "[addresses.\toutbound]", "[ addresses . outbound ]"):
        base = tables_text((_entry(0, 0), _entry(1, 1)))
        text = "version = 1\n\n" + base.replace("[addresses.outbound]", header)
        before = parse_profile(store.Path("p"), text.encode())
        after = before.with_address(_entry(2, 0))
        rendered = render_profile(after, text.encode(), before=before)
        assert parse_profile(store.Path("p"), rendered.encode()) == after, header


def test_the_splice_check_catches_new_tables_put_between_an_entry_and_its_sub_table() -> None:
    second, new = _entry(1, 1), _entry(2, 0)
    whole = tables_text((second,))
    head = whole.split("[addresses.outbound]")[0]
    wrong = Splice("", (head, tables_text((new,))), (second, new))
    assert not splice_means(wrong)  # the entry read back without its outbound table
    assert splice_means(Splice("", (whole, tables_text((new,))), (second, new)))


def test_a_toml_1_1_profile_is_refused_like_tomllib_refuses_it() -> None:
    """The profile stays TOML 1.0 (what Python's tomllib and other tools read): tomli 2.4+
    would accept the \\e escape and a time without seconds."""
    for value in ('"\\e"', "07:32"):
        with pytest.raises(ProfileError):
            parse_profile(store.Path("p"), f"version = 1\n[connector]\nname = {value}\n".encode())
