"""``--pidfile`` of ``worker`` and ``beat``: one live process per file (edge layer).

The file is created exclusively and holds the pid; a file left by a process that died is
taken over, one whose process is alive is refused. The process removes its own file when
it stops, never one that another process wrote since.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import click

__all__ = ["check_pidfile", "is_alive", "pidfile", "read_live_pid"]


@contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Hold ``path`` with this process's pid while the service runs; refuse a live one."""
    if path is None:
        yield
        return
    _write_pidfile(path)
    try:
        yield
    finally:
        _remove_own_pidfile(path)


def check_pidfile(path: str) -> None:
    """Refuse ``path`` if it holds the pid of a running process.

    Raises:
        click.ClickException: it does, naming the file and the pid.
    """
    pid = _read_pid(path)
    if pid is not None and pid != os.getpid() and is_alive(pid):
        raise click.ClickException(f"pidfile {path} holds the pid {pid} of a running process")


def _write_pidfile(path: str) -> None:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        check_pidfile(path)
        os.unlink(path)
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{os.getpid()}\n")


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as file:
            return int(file.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def read_live_pid(path: str) -> int | None:
    """The pid in ``path`` if that process runs, else None (no file, or a stale one)."""
    pid = _read_pid(path)
    return pid if pid is not None and is_alive(pid) else None


def is_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_own_pidfile(path: str) -> None:
    if _read_pid(path) == os.getpid():
        os.unlink(path)
