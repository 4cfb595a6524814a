"""Wake processes that wait on a file-based store when another process writes to it (edge layer).

SQLite has no way to tell a reader that a row was committed elsewhere, so the SQLite
broker and result store pair each database with a directory of Unix datagram sockets,
one per waiter. A writer calls ``notify()`` after its commit and every waiter's
``Listener.wait`` returns at once, instead of each process polling the file.

A notification carries no data and may be spurious: a woken waiter reads the store
again and waits once more if there is nothing for it. Waiters should still bound each
wait (a notification is lost if the writer dies between commit and notify, and rows
with a due time become visible without any write).

Use::

    wakeup = Wakeup(Path(database + ".wake"))
    listener = wakeup.listen()      # register before reading the store: no lost wakeups
    try:
        while not read_store():
            listener.wait(0.5)
    finally:
        listener.close()

    wakeup.notify()                 # in the writer, after commit
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import select
import socket
from pathlib import Path

__all__ = ["Listener", "Wakeup"]

logger = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux and 104 on macOS, including the closing NUL.
MAX_SOCKET_PATH = 100
SOCKET_SUFFIX = ".sock"
# A socket name is "<pid>-<12 hex digits>.sock"; pids have at most 7 digits.
SOCKET_NAME_LENGTH = 7 + 1 + 12 + len(SOCKET_SUFFIX)
SHORT_DIRECTORY_ROOT = Path("/tmp")


def socket_directory(directory: Path) -> Path:
    """Return ``directory``, or a short stand-in under /tmp when socket paths would not fit.

    Every process derives the same stand-in from the same directory path, so they still meet.
    """
    directory = directory.resolve()
    if len(os.fsencode(directory)) + 1 + SOCKET_NAME_LENGTH <= MAX_SOCKET_PATH:
        return directory
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:24]
    return SHORT_DIRECTORY_ROOT / f"celeriac-{os.getuid()}-{digest}"


class Wakeup:
    """Notify every process waiting on one store, and let this process wait for notifications.

    Safe to share between threads and across ``os.fork``: it holds no open file, only the
    directory path.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = socket_directory(directory)

    def notify(self) -> None:
        """Wake every current listener; never blocks, and drops sockets whose owner is gone."""
        try:
            entries = [
                entry.path for entry in os.scandir(self.directory) if entry.name.endswith(".sock")
            ]
        except FileNotFoundError:
            return
        if not entries:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for path in entries:
                self._send(sender, path)

    def listen(self) -> Listener:
        """Register a listener that sees every ``notify()`` from now until it is closed."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Listener(self.directory)

    @staticmethod
    def _send(sender: socket.socket, path: str) -> None:
        try:
            sender.sendto(b"\x01", path)
        except (BlockingIOError, FileNotFoundError):
            # A full buffer means the listener already has a wakeup pending; a missing
            # file means it closed after the directory was read.
            return
        except ConnectionRefusedError:
            # Nobody is bound to the file any more: its process died without closing.
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            # The write this notify follows has committed; failing it now would make the
            # caller retry and duplicate it. The listener still wakes on its own timeout.
            logger.warning("could not wake listener %s: %s", path, exc)


class Listener:
    """One waiter's socket in a wakeup directory; close it to stop receiving.

    Meant for one thread at a time. ``fileno()`` lets a caller wait on it together with
    other files through ``select`` or ``selectors``.
    """

    def __init__(self, directory: Path) -> None:
        self._pid = os.getpid()
        self.path = directory / f"{self._pid}-{secrets.token_hex(6)}{SOCKET_SUFFIX}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(os.fsdecode(self.path))
        except OSError:
            self._socket.close()
            raise
        self._socket.setblocking(False)
        self._poller = select.poll()
        self._poller.register(self._socket, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; return whether one came."""
        if self._drain():
            return True
        if not self._poller.poll(math.ceil(max(timeout, 0.0) * 1000)):
            return False
        self._drain()
        return True

    def fileno(self) -> int:
        """Return the socket's file descriptor, readable when a notification is pending."""
        return self._socket.fileno()

    def close(self) -> None:
        """Remove the socket from the directory and close it; calling it again does nothing.

        A process that inherited the listener over ``fork`` only closes its copy: the
        socket file stays for the process that made it.
        """
        if self._socket.fileno() == -1:
            return
        if os.getpid() == self._pid:
            self.path.unlink(missing_ok=True)
        self._socket.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drain(self) -> bool:
        """Consume every pending notification; return whether there was any."""
        received = False
        while True:
            try:
                self._socket.recv(64)
            except BlockingIOError:
                return received
            received = True
