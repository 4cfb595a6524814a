"""``-D/--detach`` for ``worker`` and ``beat``: run on as a daemon (edge layer).

As Celery's: the service goes on in the background, in a new session with no terminal,
its standard streams on ``/dev/null`` (so ``--logfile`` is where its log goes), optionally
under another user and group and with another umask. The command returns as soon as the
daemon, as its own user, has opened its log file and found its pidfile free: with status
0, or with the daemon's error on the terminal and status 1, so a mistake is not lost in
the background.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from celeriac.cli.pidfile import check_pidfile

__all__ = ["Detach", "detach_from_options", "detach_options", "parse_umask"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Detach:
    """How to detach: the umask and the user and group to switch to (None: unchanged)."""

    umask: int | None = None
    uid: int | None = None
    gid: int | None = None

    def start(self, *, logfile: str | None, pidfile: str | None) -> None:
        """Become the daemon; this returns in it, and the calling process exits.

        The daemon checks, as its own user and with its own umask, that the log file
        opens and the pidfile is free, and reports back through a pipe: the calling
        process exits 0 once it is told so, or prints the daemon's error and exits 1.
        """
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() > 0:
            os.close(write_end)
            _report_and_exit(read_end)
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        try:
            self._become_daemon()
            _check_files(logfile, pidfile)
        except click.ClickException as exc:
            os.write(write_end, exc.format_message().encode())
            os._exit(1)
        except OSError as exc:
            os.write(write_end, f"cannot switch to the daemon's user or group: {exc}".encode())
            os._exit(1)
        _detach_streams()
        os.write(write_end, READY)
        os.close(write_end)

    def _become_daemon(self) -> None:
        if self.umask is not None:
            os.umask(self.umask)
        if self.gid is not None:
            os.setgid(self.gid)
        if self.uid is not None:
            if self.gid is None:
                os.setgid(pwd.getpwuid(self.uid).pw_gid)
            os.setuid(self.uid)


READY = b"ready"


def _report_and_exit(read_end: int) -> None:
    """In the calling process: wait for the daemon's word, say what went wrong, exit."""
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    message = b"".join(chunks)
    if message == READY:
        os._exit(0)
    reason = message.decode(errors="replace") or "the daemon exited before it was ready"
    sys.stderr.write(f"Error: {reason}\n")
    sys.stderr.flush()
    os._exit(1)


def _check_files(logfile: str | None, pidfile: str | None) -> None:
    if logfile:
        try:
            with open(logfile, "a"):
                pass
        except OSError as exc:
            raise click.ClickException(f"cannot open the log file: {exc}") from exc
    if pidfile:
        check_pidfile(pidfile)


def _detach_streams() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(null, stream)
    os.close(null)


def parse_umask(value: str) -> int:
    """``"022"`` or ``"0o22"`` -> 0o22: a umask is octal, as Celery reads ``--umask``.

    Raises:
        click.BadParameter: not an octal number from 0 to 0o777.
    """
    try:
        umask = int(value.removeprefix("0o"), 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal umask, such as 022") from None
    if not 0 <= umask <= 0o777:
        raise click.BadParameter(f"{value!r} is not an octal umask, such as 022")
    return umask


def _user_id(value: str) -> int:
    try:
        return int(value) if value.isdigit() else pwd.getpwnam(value).pw_uid
    except KeyError:
        raise click.BadParameter(f"no user named {value!r}") from None


def _group_id(value: str) -> int:
    try:
        return int(value) if value.isdigit() else grp.getgrnam(value).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group named {value!r}") from None


def detach_from_options(options: dict[str, Any]) -> Detach | None:
    """The :class:`Detach` a command's options ask for, checked now; None without -D."""
    if not options["detach"]:
        return None
    umask, uid, gid = options["umask"], options["uid"], options["gid"]
    return Detach(
        umask=parse_umask(umask) if umask is not None else None,
        uid=_user_id(uid) if uid is not None else None,
        gid=_group_id(gid) if gid is not None else None,
    )


def detach_options(command: F) -> F:
    """Add Celery's ``-D/--detach``, ``--uid``, ``--gid``, ``--umask`` and ``--executable``."""
    options = (
        click.option(
            "-D", "--detach", is_flag=True, help="Start as a background process (a daemon)."
        ),
        click.option("--uid", help="With --detach: user name or uid to run as."),
        click.option("--gid", help="With --detach: group name or gid to run as."),
        click.option("--umask", help="With --detach: octal umask of the daemon, such as 022."),
        click.option(
            "--executable", help="Accepted for compatibility: the daemon is this same process."
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command
