"""``celery.bin.base.Option``: optparse-style options for ``app.user_options`` (compat shim).

Celery 4 took ``optparse`` options in ``app.user_options['preload']`` (seed 001 adds one
with ``Option('--monitoring', action='store_true', help=...)``); Celery 5 and celeriac
take click options. ``Option`` is a click option built from optparse's arguments, so
both forms can be added to the same set and every command accepts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import click

__all__ = ["Option"]

# optparse's type names; a type given as a Python type is used as it is.
_TYPES: Final[dict[str, Any]] = {
    "string": click.STRING,
    "str": click.STRING,
    "int": click.INT,
    "long": click.INT,
    "float": click.FLOAT,
}
_VALUE_ACTIONS: Final = frozenset({"store", "append"})
_FLAG_ACTIONS: Final = frozenset({"store_true", "store_false", "store_const", "count"})


class Option(click.Option):
    """A click option from optparse arguments: ``Option('-m', '--monitoring',
    action='store_true', dest='monitoring', default=..., help=...)``.

    The actions ``store`` (the default), ``store_true``, ``store_false``, ``store_const``,
    ``append`` and ``count`` are understood; ``type`` is an optparse type name
    (``string``, ``int``, ``long``, ``float``, ``choice`` with ``choices``) or a Python
    type; ``dest`` names the value in the parsed options.

    Raises:
        TypeError: an action click has no counterpart for, such as ``callback``.
    """

    def __init__(
        self,
        *opts: str,
        action: str | None = None,
        type: Any = None,
        dest: str | None = None,
        default: Any = None,
        nargs: int | None = None,
        const: Any = None,
        choices: Sequence[str] | None = None,
        help: str | None = None,
        metavar: str | None = None,
    ) -> None:
        action = action or "store"
        if action not in _VALUE_ACTIONS | _FLAG_ACTIONS:
            raise TypeError(
                f"Option action {action!r} has no click counterpart: add a click.Option instead"
            )
        declarations = [*opts, dest] if dest else list(opts)
        settings: dict[str, Any] = {"help": help, "metavar": metavar}
        if action == "store_true":
            settings.update(is_flag=True, default=bool(default))
        elif action == "store_false":
            settings.update(
                is_flag=True, flag_value=False, default=True if default is None else default
            )
        elif action == "store_const":
            settings.update(is_flag=True, flag_value=const, default=default)
        elif action == "count":
            settings.update(count=True, default=default or 0)
        else:
            settings.update(
                type=_value_type(type, choices),
                default=default,
                nargs=nargs or 1,
                multiple=action == "append",
            )
        super().__init__(declarations, **settings)


def _value_type(name: Any, choices: Sequence[str] | None) -> Any:
    """Turn optparse's ``type`` (a name or a Python type) into a click type."""
    if choices is not None or name == "choice":
        return click.Choice(list(choices or ()))
    if name is None:
        return click.STRING
    if isinstance(name, str):
        if name not in _TYPES:
            raise TypeError(f"Option type {name!r} is not an optparse type celeriac knows")
        return _TYPES[name]
    return name
