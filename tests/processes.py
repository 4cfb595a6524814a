"""Child Python processes for tests that need more than one process, killed by PID after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
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
