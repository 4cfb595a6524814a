"""``celeriac multi`` drives real detached workers: start with per-node options, stopwait,
restart and kill, each found again through its pidfile."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.cli.pidfile import is_alive
from tests.e2e.conftest import Broker, run_celeriac, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]
HOST = socket.gethostname()
FILES = ("--pidfile=run/%n.pid", "--logfile=log/%n.log")
NODES = ("-P", "threads", "-c", "1", "-c:w2", "2", *FILES)


def multi(tmp_path: Path, broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return run_celeriac(broker, tmp_path, "multi", *args, timeout=60)


def pids(tmp_path: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in (tmp_path / "run").glob("*.pid")}


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[None]:
    """Kill (by pid) every worker whose pidfile is left."""
    yield
    for pid in pids(tmp_path).values() if (tmp_path / "run").exists() else ():
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def concurrency(client: Celeriac) -> dict[str, int]:
    stats = client.control.inspect(timeout=2.0).stats() or {}
    return {node: reply["pool"]["max-concurrency"] for node, reply in stats.items()}


def test_start_stopwait_restart_and_kill(
    tmp_path: Path, broker: Broker, client: Celeriac, cleanup: None
) -> None:
    started = multi(tmp_path, broker, "start", "w1", "w2", *NODES)
    assert started.returncode == 0, started.stderr
    assert f"> Starting nodes...\n\t> w1@{HOST}: OK\n\t> w2@{HOST}: OK\n" in started.stdout
    first = pids(tmp_path)
    assert sorted(first) == ["w1", "w2"]
    assert wait_for(lambda: len(concurrency(client)) == 2, timeout=20)
    assert concurrency(client) == {f"w1@{HOST}": 1, f"w2@{HOST}": 2}
    assert client.send_task("sigproj.add", (1, 2)).get(timeout=20) == 3

    again = multi(tmp_path, broker, "start", "w1", "w2", *NODES)
    assert again.returncode == 2, "the exit status counts the nodes that failed"
    assert f"w1@{HOST}: FAILED: Error: pidfile run/w1.pid holds the pid" in again.stderr

    restarted = multi(tmp_path, broker, "restart", "w1", "w2", *NODES)
    assert restarted.returncode == 0, restarted.stderr
    assert f"\t> w1@{HOST}: TERM -> {first['w1']}\n" in restarted.stdout
    assert "> Waiting for 2 nodes -> " in restarted.stdout
    assert not any(is_alive(pid) for pid in first.values())
    second = pids(tmp_path)
    assert sorted(second) == ["w1", "w2"]
    assert set(second.values()).isdisjoint(first.values())

    stopped = multi(tmp_path, broker, "stopwait", "w1", *FILES)
    killed = multi(tmp_path, broker, "kill", "w2", *FILES)
    assert f"\t> w1@{HOST}: OK\n" in stopped.stdout
    assert f"\t> w2@{HOST}: KILL -> {second['w2']}\n" in killed.stdout
    assert wait_for(lambda: not any(is_alive(pid) for pid in second.values()))
    assert f"\t> w1@{HOST}: DOWN\n" in multi(tmp_path, broker, "stop", "w1", *FILES).stdout
    assert "worker: Warm shutdown (SIGTERM)" in (tmp_path / "log" / "w1.log").read_text()


def test_show_prints_each_worker_command_and_names_lists_the_nodes(
    tmp_path: Path, broker: Broker
) -> None:
    shown = multi(tmp_path, broker, "show", "2", "-l", "INFO", "-Q:2", "images")
    names = multi(tmp_path, broker, "names", "2")

    lines = shown.stdout.splitlines()
    assert lines[0].endswith(
        f"-m celeriac -A sigproj worker --detach -n celery1@{HOST} --pidfile=celery1.pid"
        " --logfile=celery1.log -l INFO"
    )
    assert lines[1].endswith("--logfile=celery2.log -l INFO -Q images")
    assert names.stdout == f"celery1@{HOST}\ncelery2@{HOST}\n"
