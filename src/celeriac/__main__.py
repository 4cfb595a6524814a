"""``python -m celeriac`` and the ``celeriac`` script: the command line's entry (edge layer).

A worker with a green pool (``celeriac -A proj worker -P gevent``) needs the standard
library patched before anything opens a socket, starts a thread or imports the app, so
the command line is read for the pool here, before the CLI and the app are imported, as
Celery's own entry point does. Only the ``-P``/``--pool`` option of ``worker`` counts:
a ``worker_pool`` setting is read too late, and the gevent pool refuses to run unpatched.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["main", "maybe_patch_concurrency", "pool_option"]

GREEN_POOLS: Final = frozenset({"gevent"})


def pool_option(argv: Sequence[str]) -> str | None:
    """Return the pool the ``worker`` command is given in ``argv`` (lower case), or None."""
    if "worker" not in argv:
        return None
    arguments = list(argv[list(argv).index("worker") + 1 :])
    for index, argument in enumerate(arguments):
        if argument == "--":
            return None
        if argument in ("-P", "--pool"):
            return arguments[index + 1].lower() if index + 1 < len(arguments) else None
        if argument.startswith("--pool="):
            return argument.partition("=")[2].lower()
        if argument.startswith("-P"):
            return argument[2:].lower()
    return None


def maybe_patch_concurrency(argv: Sequence[str] | None = None) -> None:
    """Patch the standard library for gevent if ``argv`` starts a worker with a green pool.

    Without gevent installed nothing is patched, and the worker then says what is missing.
    """
    if pool_option(sys.argv[1:] if argv is None else argv) not in GREEN_POOLS:
        return
    try:
        from gevent import monkey
    except ImportError:
        return
    monkey.patch_all()


def main() -> None:
    """Run the ``celeriac`` command, patched first for a green pool."""
    maybe_patch_concurrency()
    from celeriac.cli import main as command

    command(prog_name="celeriac")


if __name__ == "__main__":
    main()
