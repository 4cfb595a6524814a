"""``celeriac shell``: an interactive Python with the app and its tasks at hand (edge layer).

As ``celery shell``: the namespace holds the app (as ``app``, ``celery`` and ``celeriac``),
``Task``, the canvas (``chain``, ``chord``, ``group``, ``chunks``, ``xmap``, ``xstarmap``,
``signature``, ``subtask``) and, unless ``--without-tasks``, each task of the app under its
short name (``add`` for ``proj.tasks.add``), Celery's own ``celery.*`` tasks left out.
IPython, then bpython, is used when installed; ``--python`` asks for the standard console.
"""

from __future__ import annotations

import code
import importlib
from typing import Any

import click

from celeriac import Task, chain, chord, chunks, group, signature, xmap, xstarmap
from celeriac.app import Celeriac
from celeriac.cli.app_loading import CeleriacCommand, CLIContext

__all__ = ["shell"]

SHELLS = ("ipython", "bpython", "python")


def namespace(app: Celeriac, *, with_tasks: bool = True) -> dict[str, Any]:
    """The names the shell starts with."""
    names: dict[str, Any] = {
        "app": app,
        "celery": app,
        "celeriac": app,
        "Task": Task,
        "chain": chain,
        "chord": chord,
        "group": group,
        "chunks": chunks,
        "xmap": xmap,
        "xstarmap": xstarmap,
        "signature": signature,
        "subtask": signature,
    }
    if with_tasks:
        for name, task in sorted(app.tasks.items()):
            if not name.startswith("celery."):
                names[getattr(task, "__name__", None) or name.rpartition(".")[2]] = task
    return names


def banner(names: dict[str, Any]) -> str:
    """Say what the namespace holds, as ``celery shell`` does."""
    tasks = sorted(name for name, value in names.items() if isinstance(value, Task))
    lines = [
        "Welcome to the celeriac shell.",
        "The app is 'app' (also 'celery'); the canvas: chain, chord, group, chunks,",
        "xmap, xstarmap, signature.",
    ]
    if tasks:
        lines.append(f"Tasks: {', '.join(tasks)}")
    return "\n".join(lines) + "\n"


def _run_ipython(names: dict[str, Any]) -> None:
    module = importlib.import_module("IPython")
    module.start_ipython(argv=[], user_ns=names, display_banner=False)


def _run_bpython(names: dict[str, Any]) -> None:
    module = importlib.import_module("bpython")
    module.embed(names, banner=banner(names))


def _run_python(names: dict[str, Any]) -> None:
    try:
        import readline
        import rlcompleter

        readline.set_completer(rlcompleter.Completer(names).complete)
        readline.parse_and_bind("tab:complete")
    except ImportError:
        pass
    code.interact(banner=banner(names), local=names, exitmsg="")


RUNNERS = {"ipython": _run_ipython, "bpython": _run_bpython, "python": _run_python}


def _installed(shell: str) -> bool:
    if shell == "python":
        return True
    try:
        importlib.import_module("IPython" if shell == "ipython" else shell)
    except ImportError:
        return False
    return True


@click.command(cls=CeleriacCommand)
@click.option("-I", "--ipython", "choice", flag_value="ipython", help="Force IPython.")
@click.option("-B", "--bpython", "choice", flag_value="bpython", help="Force bpython.")
@click.option("--python", "choice", flag_value="python", help="Force the default Python shell.")
@click.option("-T", "--without-tasks", is_flag=True, help="Don't add the tasks to the namespace.")
@click.pass_obj
def shell(cli: CLIContext, choice: str | None, without_tasks: bool) -> None:
    """Start a shell session with convenient access to the app and its tasks."""
    app = cli.app
    app.import_default_modules()
    names = namespace(app, with_tasks=not without_tasks)
    if choice is not None and not _installed(choice):
        raise click.ClickException(f"{choice} is not installed: pip install {choice}")
    chosen = choice or next(name for name in SHELLS if _installed(name))
    RUNNERS[chosen](names)
