"""Profile.find / with_address / without_address keep their meaning with the position index
that makes a bulk import linear: checked against a plain list after any sequence of edits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpconn.addresses import parse_address
from smtpconn.profile.model import Mode, Profile, SupportAddress, Workflow

ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 6), st.booleans()), max_size=30
)


def _entry(i: int, bidirectional: bool) -> SupportAddress:
    mode = Mode.BIDIRECTIONAL if bidirectional else Mode.OUTBOUND_ONLY
    return SupportAddress(parse_address(f"s{i}@example.com"), mode, Workflow.FORWARDING)


@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_edits_match_a_plain_list(ops: list[tuple[str, int, bool]]) -> None:
    profile = Profile()
    reference: list[SupportAddress] = []
    for op, i, flag in ops:
        entry = _entry(i, flag)
        keys = [e.address.key for e in reference]
        if op == "add":
            profile = profile.with_address(entry)
            if entry.address.key in keys:
                reference[keys.index(entry.address.key)] = entry
            else:
                reference.append(entry)
        else:
            profile = profile.without_address(entry.address)
            reference = [e for e in reference if e.address.key != entry.address.key]
        assert profile.addresses == tuple(reference)
        assert profile == Profile(addresses=tuple(reference))
        for j in range(7):
            address = parse_address(f"s{j}@example.com")
            expected = next((e for e in reference if e.address.key == address.key), None)
            assert profile.find(address) == expected
