"""Find the app named by ``-A`` and hand it to the commands (edge layer).

``find_app`` accepts what Celery's ``-A`` does: ``proj`` (a module or package),
``proj:app``, ``proj.module:attr`` and ``proj.app``. Commands read the app from
``ctx.obj.app`` (a ``CLIContext``, as in Celery, so ported command plugins keep working),
and ``CeleriacCommand`` adds the app's user options (``app.user_options``) to them and
sends ``user_preload_options``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import click

from celeriac import signals
from celeriac._imports import import_from_string
from celeriac.app import Celeriac
from celeriac.backends.base import ResultBackend
from celeriac.transports.base import Transport

__all__ = [
    "PRELOAD_OPTIONS_KEY",
    "AppNotFound",
    "CLIContext",
    "CeleriacCommand",
    "CeleriacGroup",
    "find_app",
    "load_stores",
]

APP_ATTRIBUTES: Final = ("app", "celery", "celeriac")
APP_SUBMODULES: Final = ("celery", "celeriac")
PRELOAD_OPTIONS_KEY: Final = "celeriac.preload_options"


class AppNotFound(ImportError):
    """The ``-A`` value names no Celeriac app; the message says what was tried."""


def find_app(name: str) -> Celeriac:
    """Import the app named ``name``, with the current directory first on ``sys.path``.

    A module is searched for an ``app``, ``celery`` or ``celeriac`` attribute, then (for
    a package) in its ``celery`` and ``celeriac`` submodules, then for any Celeriac
    instance, as Celery does.

    Raises:
        AppNotFound: nothing importable by that name holds a Celeriac app.
    """
    _put_working_directory_on_path()
    target = _import(name, name)
    if isinstance(target, Celeriac):
        return target
    if isinstance(target, ModuleType) and ":" not in name:
        return _app_in_module(target)
    raise AppNotFound(f"{name!r} is {type(target).__name__!r}, not a Celeriac app")


def load_stores(app: Celeriac) -> tuple[Transport, ResultBackend]:
    """Build the app's broker transport and result store now, before a command relies on them.

    Neither connects yet; a URL whose implementation cannot be imported (a missing extra)
    fails here, in one line, rather than after a task was sent or a worker started.
    """
    return app.transport, app.backend


def _put_working_directory_on_path() -> None:
    directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import(path: str, shown: str) -> Any:
    """Import ``path``, turning the errors a user can fix into AppNotFound."""
    module_name = path.partition(":")[0]
    try:
        return import_from_string(path)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            raise AppNotFound(
                f"no module named {missing!r} (searched {os.getcwd()} and sys.path)"
            ) from exc
        raise AppNotFound(f"while importing {module_name!r}: {exc}") from exc
    except (ImportError, SyntaxError) as exc:
        raise AppNotFound(f"while importing {shown!r}: {exc}") from exc
    except AttributeError as exc:
        raise AppNotFound(f"{shown!r}: {exc}") from exc


def _app_in_module(module: ModuleType) -> Celeriac:
    """Find the app in a module as Celery's ``find_app`` does; say what was tried if none."""
    for attribute in APP_ATTRIBUTES:
        candidate = getattr(module, attribute, None)
        if isinstance(candidate, Celeriac):
            return candidate
    tried = [f"attributes {', '.join(APP_ATTRIBUTES)} of module {module.__name__!r}"]
    if hasattr(module, "__path__"):
        submodules = [f"{module.__name__}.{name}" for name in APP_SUBMODULES]
        for submodule_name in submodules:
            found = _app_in_submodule(submodule_name)
            if found is not None:
                return found
        tried.append(f"submodules {', '.join(submodules)}")
    for value in vars(module).values():
        if isinstance(value, Celeriac):
            return value
    tried.append("any Celeriac instance in the module")
    raise AppNotFound(f"no Celeriac app found; tried {'; '.join(tried)}")


def _app_in_submodule(name: str) -> Celeriac | None:
    """Return the app of submodule ``name``, or None if there is no such submodule or app."""
    if importlib.util.find_spec(name) is None:
        return None
    submodule = _import(name, name)
    if not isinstance(submodule, ModuleType):
        return None
    try:
        return _app_in_module(submodule)
    except AppNotFound:
        return None


@dataclass(slots=True)
class CLIContext:
    """What every command finds in ``ctx.obj``: the app and the global output options."""

    app: Celeriac
    quiet: bool = False
    no_color: bool = False
    workdir: str | None = None

    def echo(self, message: str, **style: Any) -> None:
        """Write a line to stdout unless ``-q``; ``style`` (click.style) unless ``--no-color``."""
        if self.quiet:
            return
        click.echo(message if self.no_color or not style else click.style(message, **style))


class CeleriacCommand(click.Command):
    """A subcommand that takes the app's user options and sends ``user_preload_options``.

    The options in ``app.user_options["preload"]`` (and, for the worker, in
    ``app.user_options["worker"]``) are added to the command's own when it parses its
    arguments, so they also show in its ``--help``. Before the command runs, the values
    of the preload options are taken out of its parameters, sent with the signal
    (sender: this command; sent even when the app has no such option, with an empty
    ``options``) and kept in ``ctx.meta[PRELOAD_OPTIONS_KEY]``.
    """

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = [*self.params, *self._user_options(ctx)]
        help_option = self.get_help_option(ctx)
        if help_option is not None:
            params.append(help_option)
        return params

    def invoke(self, ctx: click.Context) -> Any:
        cli = ctx.find_object(CLIContext)
        if cli is not None:
            names = [option.name for option in cli.app.user_options.get("preload", ())]
            options = {name: ctx.params.pop(name) for name in names if name in ctx.params}
            ctx.meta[PRELOAD_OPTIONS_KEY] = options
            signals.user_preload_options.send(sender=self, app=cli.app, options=options)
        return super().invoke(ctx)

    def _user_options(self, ctx: click.Context) -> list[click.Parameter]:
        cli = ctx.find_object(CLIContext)
        if cli is None:
            return []
        options = [*cli.app.user_options.get("preload", ())]
        if self.name == "worker":
            options.extend(cli.app.user_options.get("worker", ()))
        return options


class CeleriacGroup(CeleriacCommand, click.Group):
    """A group of subcommands that takes the app's preload options, as a command does.

    Its subcommands are plain commands: the group sends ``user_preload_options`` once.
    """
