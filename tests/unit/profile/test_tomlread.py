"""The fast TOML reader means exactly what tomli means: same data (types, time zones, NaN signs
included) for every document tomli accepts, tomli's own error for every document it refuses.

Two directions matter. toml-rs refusing what tomli accepts only costs time (tomli reads it).
toml-rs accepting what tomli refuses, or reading it differently, would change what a profile
means: that is what the tricky documents and the generated ones below look for.
"""

from __future__ import annotations

import math
import os
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import tomli
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpconn.errors import ProfileError
from smtpconn.profile import tomlread
from smtpconn.profile.store import parse_profile

FAST = tomlread.fast_loads()


def _require_fast() -> tomlread._Loads:
    if FAST is None:
        if os.environ.get("CI") == "true":
            pytest.fail("toml-rs is not installed (pyproject.toml requires it)")
        pytest.skip("toml-rs is not installed")
    return FAST


def _typed(value: Any) -> Any:
    """``value`` with every leaf tagged by its exact type, so 1 != 1.0 != True and two
    datetimes equal only with the same wall time, offset and kind of tzinfo."""
    if isinstance(value, dict):
        return ("table", {k: _typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("array", [_typed(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("nan", math.copysign(1.0, value))
    if isinstance(value, datetime | date | time):
        tz = getattr(value, "tzinfo", None)
        return (type(value).__name__, value.isoformat(), type(tz).__name__, str(tz))
    return (type(value).__name__, value)


def _tomli(text: str) -> Any:
    try:
        return _typed(tomli.loads(text))
    except tomli.TOMLDecodeError as exc:
        return ("error", str(exc))


def _ours(text: str) -> Any:
    try:
        return _typed(tomlread.loads(text))
    except tomli.TOMLDecodeError as exc:
        return ("error", str(exc))


# What TOML 1.1 (toml-rs's default) or a lenient reader would accept and TOML 1.0 refuses, what
# readers commonly disagree on, and what a profile holds (offset date-times, hashes, references).
TRICKY = [
    "a = {\n  b = 1,\n}\n",  # 1.1: newlines and a trailing comma in an inline table
    'a = "\\e"\n',  # 1.1: \e
    'a = "\\x41"\n',  # 1.1: \xHH
    "a = 07:32\n",  # 1.1: a time without seconds
    "a = 1979-05-27T07:32Z\n",  # 1.1: a date-time without seconds
    "\ufeffa = 1\n",  # a byte-order mark: toml-rs skips it, tomli refuses it
    "a = 99999999999999999999\n",  # beyond 64 bits
    "a = -9223372036854775808\nb = 0x7FFF_FFFF_FFFF_FFFF\nc = 0o755\nd = 0b1101\n",
    "a = 1979-05-27T07:32:00.999999999-07:00\n",  # nanoseconds, a negative offset
    "a = 1979-05-27 07:32:00Z\nb = 1979-05-27t07:32:00z\nc = 2026-11-30T02:53:59+00:00\n",
    "a = 1979-05-27T07:32:00\nb = 1979-05-27\nc = 07:32:00.5\n",  # local kinds
    "a = -nan\nb = +nan\nc = inf\nd = -inf\ne = -0.0\n",
    "a = 6.626e-34\nb = 0.1\nc = 1e400\nd = 5e-324\ne = 1_000.000_1\n",
    "[a.b.c]\nz = 1\n[a]\nb.c.y = 2\n",  # redefining a table through dotted keys
    "[a]\nb.c = 1\n[a.b]\nd = 2\n",
    "a = 1\na = 2\n",
    "a = 1\rb = 2\n",  # a lone CR
    "a = 1 # \x7f\n",  # DEL in a comment
    'a = "\x01"\n',
    'a = "\t"\n',  # a tab is allowed in a basic string
    "[[a]]\n[a]\n",
    "a = {b = 1}\n[a.c]\n",
    '"" = 1\n',
    "a . b = 1\n",
    "a = \n",
    'a = "\\uD800"\n',  # a surrogate is no scalar value
    'a = "\\U0001F600 \\u00e9 ü"\n',
    'a = [1, "x", 1.5, [true], {b = 1}]\n',  # mixed arrays are TOML 1.0
    "a = 01\n",
    "a = 1__0\n",
    "a = 0xDEAD_beef\n",
    'a = """x""""\n',
    "a = '''x''''\n",
    'a = """\\\n   folded \\\n  """\n',
    "a = 1979-05-27T07:32:00+24:00\n",
    "a = 2021-02-30\n",
    "a = 2024-02-29\n",
    "a = 1979-05-27T07:32:60Z\n",
    "a = 1979-05-27T24:00:00Z\n",
    "a = true\nb = false\nc = True\n",
    "[a]\n[a]\n",
    "[a.b]\n[a]\n",
    "a = [\n  1,\n  2, # comment\n]\n",
    "[ a . 'b c' . \"d\" ]\nx = 1\n",
    "a = 'C:\\Users\\nodejs'\n",
    'a = """\r\nline\r\n"""\n',
    "key = # nothing\n",
    "=1\n",
    "a = [1,,2]\n",
    "a = 1979-05-27T07:32:00.Z\n",
    "a = +1979-05-27\n",
    "\n\n# only a comment\n",
    "",
    # A profile as smtpconn writes it.
    'version = 1\n\n[[addresses]]\naddress = "support@example.com"\nmode = "bidirectional"\n'
    '[addresses.outbound]\nhost = "mail.example.com"\nport = 587\nsecret = "env:SMTP_PASSWORD"\n'
    '[addresses.inbound]\nusername = "support@example.com"\n'
    'password_hash = "scrypt$16384$8$1$Qy9U6M+J9Hs8sh0enRZbMw==$7HBuc3ePuKavOVctxK485joI7xp2p4Hz"\n'
    "issued_at = 2026-11-30T02:53:59Z\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_our_reader_means_what_tomli_means(text: str) -> None:
    assert _ours(text) == _tomli(text)


@pytest.mark.parametrize("text", TRICKY)
def test_toml_rs_alone_accepts_nothing_tomli_refuses_but_a_byte_order_mark(text: str) -> None:
    """What the fast path relies on: where toml-rs gives data, it is tomli's data; the one
    document where it is not (a leading BOM) never reaches it."""
    if text.startswith("\ufeff"):
        assert _tomli(text)[0] == "error"  # why loads() hands these to tomli
    _assert_fast_agrees(text)


def test_the_fast_reader_is_used_when_installed() -> None:
    """Not silently the slow path: a 1.1 document toml-rs would read under 1.1 is refused, and a
    1.0 one is read by toml-rs (its errors carry no 'at line' wording, tomli's do)."""
    fast = _require_fast()
    with pytest.raises(Exception) as refused:
        fast("a = 07:32\n")
    assert "(at line" not in str(refused.value)
    assert fast("a = 1\n") == {"a": 1}


def test_a_refused_profile_is_worded_by_tomli_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "smtpconn.toml"
    text = 'version = 1\n\n[relay]\nsink = {\n  kind = "maildir",\n}\n'  # TOML 1.1 only
    with pytest.raises(ProfileError) as refused:
        parse_profile(path, text.encode())
    assert f"{path}:4:" in str(refused.value) and "not valid TOML" in str(refused.value)
    assert "Invalid initial character for a key part" in str(refused.value)  # tomli's words


def test_a_profile_with_a_byte_order_mark_is_refused_as_before(tmp_path: Path) -> None:
    path = tmp_path / "smtpconn.toml"
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile(path, "\ufeffversion = 1\n".encode())


# --------------------------------------------------------------------------------------------
# Generated documents: valid ones (data written by tomli_w) and near-TOML noise.

_KEYS = st.text(alphabet='ab_-." é1', min_size=0, max_size=4)
_LEAVES = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)
_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS, st.booleans())
def test_generated_valid_documents_read_alike(data: dict[str, Any], multiline: bool) -> None:
    text = tomli_w.dumps(data, multiline_strings=multiline)
    assert _ours(text) == _tomli(text)
    _assert_fast_agrees(text)  # tomli_w writes some it cannot read (an offset with seconds)


_NOISE = st.text(alphabet=" \t\n\r\"'=[]{},.#\\abe01279-:+_xTZzuU", max_size=40)


@settings(max_examples=1500, deadline=None)
@given(_NOISE)
def test_generated_noise_is_never_read_differently(text: str) -> None:
    assert _ours(text) == _tomli(text)
    _assert_fast_agrees(text)


def _assert_fast_agrees(text: str) -> None:
    """toml-rs, where it gives data, gives tomli's (a leading BOM aside, see above)."""
    fast = _require_fast()
    try:
        data = _typed(fast(text))
    except Exception:
        return
    assert text.startswith("\ufeff") or data == _tomli(text)
