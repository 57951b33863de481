"""Sinks are plug-ins: every kind is registered by dotted name and loads to a sink class, and
the shared contract (``sinks.base``) imports none of them."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.relay.sinks import SINKS, SinkContext, base, sink_class


@pytest.mark.parametrize("kind", list(SinkKind))
def test_every_kind_is_registered_and_loads_to_a_checkable_sink_class(kind: SinkKind) -> None:
    assert kind in SINKS
    cls = sink_class(kind)
    assert inspect.isclass(cls)
    assert inspect.iscoroutinefunction(cls.deliver)  # type: ignore[attr-defined]
    assert callable(cls.problems)  # what relay --check asks it


def test_a_sink_is_built_from_its_own_settings_and_keeps_its_kind(tmp_path: Path) -> None:
    context = SinkContext(hostname="relay.test", timeout=5.0, base_dir=tmp_path, ca_file=None)
    lmtp = sink_class(SinkKind.LMTP)(SinkSettings(kind=SinkKind.LMTP, host="h.test"), context)
    maildir = sink_class(SinkKind.MAILDIR)(SinkSettings(path=str(tmp_path / "md")), context)
    assert (lmtp.kind, maildir.kind) == (SinkKind.LMTP, SinkKind.MAILDIR)
    assert (lmtp.concurrency, maildir.concurrency) == (None, 16)


def test_the_sink_contract_imports_no_concrete_sink() -> None:
    """A fresh interpreter: importing base (and so the package) loads no sink module."""
    code = (
        "import json, sys; import smtpconn.relay.sinks.base; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('smtpconn.relay.sinks'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout
    loaded = set(json.loads(out))
    concrete = {target.partition(":")[0] for target in SINKS.values()}
    assert loaded == {"smtpconn.relay.sinks", "smtpconn.relay.sinks.base"}
    assert not loaded & concrete


def test_the_sink_contract_names_no_concrete_sink_even_inside_a_function() -> None:
    """No import of a sink module anywhere in base.py (a lazy one was the package's import
    cycle): the registry is the one place that names them."""
    tree = ast.parse(Path(base.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    concrete = {target.partition(":")[0] for target in SINKS.values()}
    assert not imported & concrete
