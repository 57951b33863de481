"""Profile keys declared once: a key's name, type and default are its dataclass field; its kind
(what TOML types it accepts, how a value is checked and written) and whether ``smtpconn relay``
may override it from the command line travel in the field's metadata.

The profile's reader and writer (:mod:`smtpconn.profile.model`) and the relay's overrides
(:mod:`smtpconn.relay.config`) walk these declarations, so adding a ``[relay]`` key is one line
instead of one edit per list that used to name every key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from smtpconn.profile.secrets import is_password_hash

T = TypeVar("T")

_SPEC = "smtpconn.key"


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Kind:
    """What a key's value is. ``parse`` checks and converts a value read from TOML, raising
    ValueError with the finding's text; ``write`` turns the field's value back into TOML.
    ``start_refusal`` is what the relay says at start when the effective value (profile or
    command line) is not positive: ``{key}`` is the key's name, ``{option}`` its option's."""

    name: str
    accepts: tuple[type, ...]
    parse: Callable[[Any], Any] = _as_is
    write: Callable[[Any], Any] = _as_is
    start_refusal: str | None = None


def _positive(message: str, convert: Callable[[Any], Any] = _as_is) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if value <= 0:
            raise ValueError(message)
        return convert(value)

    return parse


def _password_hash(value: Any) -> Any:
    if not is_password_hash(value):
        raise ValueError("is not a smtpconn scrypt hash; never put a clear password here")
    return value


@functools.cache
def enum_parser(enum: type[StrEnum]) -> Callable[[Any], Any]:
    """A parser to one of ``enum``'s values whose refusal lists the choices."""
    # A dict lookup first: calling the enum class costs ~10x more, thousands of times per profile.
    members: dict[Any, StrEnum] = {m.value: m for m in enum}

    def parse(value: Any) -> Any:
        member = members.get(value) if isinstance(value, str) else None
        if member is not None:
            return member
        try:
            return enum(value)
        except ValueError:
            choices = ", ".join(m.value for m in enum)
            raise ValueError(f"{value!r} is not one of: {choices}") from None

    return parse


TEXT = Kind("text", (str,))
LISTEN = Kind("listen address", (str,))  # IP:PORT; the relay parses it when it starts
PATH = Kind("path", (str,))  # relative paths are relative to the profile's folder
SIZE = Kind("size", (int,), start_refusal="{key} must be a positive number of bytes")
POSITIVE_INT = Kind(
    "positive integer",
    (int,),
    parse=_positive("must be a positive integer"),
    start_refusal="{option} must be positive",
)
SECONDS = Kind(
    "seconds", (int, float), parse=_positive("must be a positive number of seconds", float)
)
PASSWORD_HASH = Kind("password hash", (str,), parse=_password_hash)
AUTO = "auto"


def _processes(value: Any) -> Any:
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f'must be a positive integer or "{AUTO}"')


# A count of processes: a positive integer, or "auto" (the relay picks one from the CPUs).
PROCESSES = Kind("process count", (int, str), parse=_processes)


def _aware(value: Any) -> Any:
    # A TOML local date-time has no zone: which instant it names depends on the machine's
    # clock settings, so a grace period could end hours early or late.
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("must be a date-time with a zone, e.g. 2026-12-07T12:00:00Z")
    return value.astimezone(UTC)


TIMESTAMP = Kind("date-time", (datetime,), parse=_aware)


def choice(enum: type[StrEnum]) -> Kind:
    # (str, int) as for every enum key: a number gets "is not one of", not a type complaint.
    return Kind(enum.__name__, (str, int), parse=enum_parser(enum), write=lambda v: v.value)


@dataclass(frozen=True, slots=True)
class KeySpec:
    kind: Kind
    cli: bool  # ``smtpconn relay --<key-with-dashes>`` overrides the profile's value


def declare(default: T, kind: Kind, *, cli: bool = False) -> T:
    """Declare a dataclass field as a profile key (used as the field's default)."""
    return field(default=default, metadata={_SPEC: KeySpec(kind, cli)})


@dataclass(frozen=True, slots=True)
class DeclaredKey:
    name: str
    kind: Kind
    cli: bool
    default: Any

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")


def declared_keys(record: type[Any]) -> Iterator[DeclaredKey]:
    """The keys ``record`` declares with :func:`declare`, in field order (the order they are written)."""
    for f in fields(record):
        spec = f.metadata.get(_SPEC)
        if isinstance(spec, KeySpec):
            yield DeclaredKey(f.name, spec.kind, spec.cli, f.default)
