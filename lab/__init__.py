"""The smtpconn lab: real servers (NSD, Postfix + Dovecot SASL) on 127.0.0.1 for tests and demos.

``lab.zones`` declares the DNS test data; ``lab.lab.Lab`` starts and stops everything.
"""

from __future__ import annotations

__all__ = ["Lab", "LabState"]


def __getattr__(name: str) -> object:
    # Lazy so that ``import lab.zones`` (used by unit tests) needs no server code or binaries.
    if name in __all__:
        from lab import lab as _lab

        return getattr(_lab, name)
    raise AttributeError(name)
