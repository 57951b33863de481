"""Probing the folders the relay writes to (the spool, a Maildir sink) before it starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def unwritable_dir(path: Path) -> str | None:
    """Why the relay could not create files in ``path`` (None: it can). Probed with a real
    temporary file, because permission bits alone say nothing for root or read-only mounts;
    nothing is left behind."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".smtpconn-check-", dir=probe)
    except OSError as exc:
        where = "" if probe == path else f" (it would be created in {probe})"
        return f"cannot write there{where}: {exc.strerror}"
    os.close(fd)
    os.unlink(name)
    return None
