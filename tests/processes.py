"""Child Python processes for tests that need more than one process, killed by PID after."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def running(
    program: str, *args: Any, cwd: Path, stdin: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """Run ``program`` with ``python -c`` in a child, killed by PID on the way out.

    With ``stdin`` the test can write to the child's standard input.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", program, *map(str, args)],
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)


def run_forked(action: Callable[[], object], timeout: float) -> int | None:
    """Run ``action`` in a forked child and return its exit code: 0 if it returned, 1 if it
    raised; None if the child was still running after ``timeout`` (it is then killed by PID).
    """
    with warnings.catch_warnings():
        # Python 3.12 warns when a process with threads forks; the tests that call this
        # fork on purpose, to see what the child inherits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        exit_code = 1
        try:
            action()
            exit_code = 0
        finally:
            os._exit(exit_code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_forked_repeatedly(
    action: Callable[[int], object], times: int, timeout: float
) -> list[int | None]:
    """Run ``action(0)``, ``action(1)``, ... each in a forked child, one after another,
    stopping after the first that fails or hangs; return their exit codes (``run_forked``)."""
    exit_codes: list[int | None] = []
    while len(exit_codes) < times and not any(exit_codes):
        exit_codes.append(run_forked(functools.partial(action, len(exit_codes)), timeout))
    return exit_codes


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")
