"""Reading TOML 1.0 exactly as tomli reads it, faster.

tomli (the standard library's tomllib, compiled) takes ~0.05 s of CPU for the 1 MB profile of
3,000 addresses, the largest single cost of an ``add-address`` at that size. toml-rs (Rust)
reads the same file in ~0.008 s. It is only a fast path: tomli stays the judge of what TOML is.

* A document toml-rs refuses is read by tomli, so every error message (and its line and column)
  is tomli's, and a document only tomli accepts is still accepted.
* toml-rs is asked for TOML 1.0 (it defaults to 1.1, which smtpconn does not accept: a profile
  must stay readable by every TOML tool).
* Where toml-rs accepts what tomli refuses, or reads it differently, the document goes to tomli
  before toml-rs sees it. Run over the toml-test suite (919 documents, valid and invalid, TOML
  1.0 and 1.1) the two agree on every document, value and type (time zones included), except
  one: toml-rs skips a leading byte-order mark, which tomli refuses. tests/unit/profile/
  test_tomlread.py checks tricky documents and generated ones.

Without toml-rs installed (it is a compiled wheel), tomli reads everything, only slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tomli

TOMLDecodeError = tomli.TOMLDecodeError

_Loads = Callable[[str], dict[str, Any]]


def _fast_reader() -> _Loads | None:
    try:
        import toml_rs
    except ImportError:
        return None

    def read(text: str) -> dict[str, Any]:
        return toml_rs.loads(text, toml_version="1.0.0")

    return read


_FAST = _fast_reader()


def loads(text: str) -> dict[str, Any]:
    """``text`` parsed as TOML 1.0; a document that is not raises tomli's ``TOMLDecodeError``."""
    if _FAST is not None and not text.startswith("\ufeff"):
        try:
            return _FAST(text)
        except Exception:  # any refusal or surprise: tomli below reads it or says why not
            pass
    return tomli.loads(text)


def fast_loads() -> _Loads | None:
    """toml-rs's TOML 1.0 reader, None where it is not installed (for the tests)."""
    return _FAST
