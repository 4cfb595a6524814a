"""``worker -D`` and ``beat -D``: the command returns at once and the service runs on as a
daemon, in its own session, logging to ``--logfile`` and holding ``--pidfile``."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.cli.pidfile import is_alive
from tests.e2e.conftest import Broker, run_celeriac, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]


def celeriac(tmp_path: Path, broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``celeriac -A sigproj ARGS`` in ``tmp_path``; a detaching command returns at once."""
    return run_celeriac(broker, tmp_path, *args)


def pid_in(path: Path) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), timeout=20)
    return int(path.read_text())


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of the daemons a test started: killed (by pid) whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_detached_worker_runs_on_in_its_own_session_and_stops_on_sigterm(
    tmp_path: Path, broker: Broker, client: Celeriac, daemons: list[int]
) -> None:
    launched = celeriac(
        tmp_path, broker, "worker", "-D", "--pidfile", "%n.pid", "-f", "%n.log",
        "-l", "info", "--umask", "077", "-P", "threads", "-c", "1", "-n", "daemon@e2e",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    pid = pid_in(tmp_path / "daemon.pid")
    daemons.append(pid)

    assert client.send_task("sigproj.add", (2, 3)).get(timeout=20) == 5
    assert os.getsid(pid) != os.getsid(0)
    assert wait_for(lambda: "daemon@e2e ready" in (tmp_path / "daemon.log").read_text())
    assert (tmp_path / "daemon.log").stat().st_mode & 0o777 == 0o600

    second = celeriac(tmp_path, broker, "worker", "-D", "--pidfile", "daemon.pid", "-n", "2@e2e")
    assert second.returncode == 1
    assert f"pidfile daemon.pid holds the pid {pid} of a running process" in second.stderr

    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not is_alive(pid), timeout=20)
    assert not (tmp_path / "daemon.pid").exists()
    assert sorted(path.name for path in tmp_path.glob("*%*")) == []


def test_a_worker_that_cannot_open_its_log_says_so_before_detaching(
    tmp_path: Path, broker: Broker
) -> None:
    launched = celeriac(tmp_path, broker, "worker", "-D", "-f", "missing/dir/w.log")

    assert launched.returncode == 1
    assert "cannot open the log file" in launched.stderr


def test_a_detached_beat_holds_its_pidfile_until_sigterm(
    tmp_path: Path, broker: Broker, daemons: list[int]
) -> None:
    launched = celeriac(
        tmp_path, broker, "beat", "--detach", "--pidfile", "beat.pid", "-f", "beat.log",
        "-l", "info",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    pid = pid_in(tmp_path / "beat.pid")
    daemons.append(pid)

    assert wait_for(lambda: "beat" in (tmp_path / "beat.log").read_text().lower(), timeout=20)
    assert os.getsid(pid) != os.getsid(0)

    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not is_alive(pid), timeout=20)
    assert not (tmp_path / "beat.pid").exists()


def test_a_bad_umask_is_a_usage_error(tmp_path: Path, broker: Broker) -> None:
    launched = celeriac(tmp_path, broker, "worker", "-D", "--umask", "999")

    assert launched.returncode == 2
    assert "'999' is not an octal umask, such as 022" in launched.stderr


def test_what_the_daemon_s_user_cannot_do_reaches_the_terminal(
    tmp_path: Path, broker: Broker
) -> None:
    if os.geteuid() == 0:
        # pytest's folders are 0700: the daemon, once "nobody", cannot open its log there.
        options: tuple[str, ...] = ("--uid", "nobody", "-f", "w.log")
        expected = "cannot open the log file: [Errno 13] Permission denied"
    else:
        options = ("--uid", "0")
        expected = "cannot switch to the daemon's user or group"

    launched = celeriac(tmp_path, broker, "worker", "-D", *options)

    assert launched.returncode == 1
    assert expected in launched.stderr
