"""A command group whose commands are built when they are first needed.

Building every command at start-up (importing its module, reading its signature, turning it into
a click command) cost ~25 ms of every ``smtpconn`` run, whichever command ran. The group knows
every command's name and the module that registers it; looking a name up builds that module's
commands, and listing the names (a "did you mean" after a typo, completion) builds none.
``smtpconn --help`` still builds every command: it shows each one's short help.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping

from typer._click.core import Command

#: Builds every command a module registers, by name.
Loader = Callable[[str], Mapping[str, Command]]


class LazyCommands(MutableMapping[str, Command]):
    """Commands by name, in a fixed order; a command is built on its first lookup."""

    def __init__(
        self, modules: Mapping[str, str], load: Loader, built: Mapping[str, Command]
    ) -> None:
        self._order: dict[str, str | None] = {**modules, **dict.fromkeys(built)}
        self._built: dict[str, Command] = dict(built)
        self._load = load

    def __getitem__(self, name: str) -> Command:
        command = self._built.get(name)
        if command is not None:
            return command
        module = self._order[name]  # KeyError: no such command
        if module is None:
            raise KeyError(name)
        try:
            self._built.update(self._load(module))
            return self._built[name]
        except KeyError as error:  # a loader's bug must not read as "no such command"
            raise RuntimeError(f"{module} did not register {name!r}") from error

    def __setitem__(self, name: str, command: Command) -> None:
        self._order.setdefault(name, None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._order[name]
        self._built.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)
