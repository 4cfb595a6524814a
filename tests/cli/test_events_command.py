"""``celeriac events`` run for real: ``--dump`` against a ``-E`` worker, and the live view
driven through tmux against a busy one, on the embedded SQLite broker and on Redis."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from celeriac import Celeriac
from celeriac.cli.event_view import render, take_snapshot
from celeriac.cli.events import EventDumper
from celeriac.events.state import State
from tests.e2e.conftest import Broker, WorkerProcess, subprocess_env, wait_for

ON_SQLITE_AND_REDIS = pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True)
NODE = "w0@e2e"
StartWorker = Callable[..., WorkerProcess]
SLOW_STARTED = re.compile(r"│ sigproj\.slow\s+│ STARTED\s+│")


def test_dump_lines_are_celerys() -> None:
    dumper = EventDumper()
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC).timestamp()
    received = {
        "type": "task-received", "hostname": NODE, "timestamp": moment, "uuid": "id-1",
        "name": "tasks.add", "args": "(2, 3)", "kwargs": "{}", "retries": 0, "clock": 7,
    }  # fmt: skip
    succeeded = {
        "type": "task-succeeded", "hostname": NODE, "timestamp": moment, "uuid": "id-1",
        "result": "5", "clock": 8,
    }  # fmt: skip
    heartbeat = {"type": "worker-heartbeat", "hostname": NODE, "timestamp": moment, "active": 0}

    lines = [dumper.format(event) for event in (received, succeeded, heartbeat)]

    assert lines == [
        f"{NODE} [2026-01-02 03:04:05.678901+00:00] task received: "
        "tasks.add(id-1) args=(2, 3) kwargs={} clock=7, retries=0",
        f"{NODE} [2026-01-02 03:04:05.678901+00:00] task succeeded: "
        "tasks.add(id-1) args=(2, 3) kwargs={} clock=8, result=5",
        f"{NODE} [2026-01-02 03:04:05.678901+00:00] heartbeat: active=0",
    ]


def test_live_view_fits_a_narrow_terminal() -> None:
    state = State()
    now = time.time()
    task_id = "2b15f6b5-73a2-4868-888f-240000000000"
    state.event(
        {"type": "worker-heartbeat", "hostname": NODE, "timestamp": now, "loadavg": [1.5, 1, 0.25]}
    )
    state.event(
        {"type": "task-received", "uuid": task_id, "name": "proj.tasks.resize",
         "hostname": NODE, "timestamp": now, "clock": 1}
    )  # fmt: skip
    state.event(
        {"type": "task-succeeded", "uuid": task_id, "hostname": NODE, "timestamp": now,
         "runtime": 0.25, "clock": 2}
    )  # fmt: skip
    console = Console(width=80, record=True)

    console.print(render(take_snapshot(state, now, task_limit=10), "memory://", width=80))

    screen = console.export_text()
    assert all(len(line) <= 80 for line in screen.splitlines())
    assert re.search(rf"│ {NODE}\s+│ ONLINE\s+│ 0\.0s ago\s+│ 1\.50 1\.00 0\.25 ", screen)
    assert re.search(
        rf"│ 2b15f6b5… │ proj\.tasks\.resize\s+│ SUCCESS\s+│ .* 250\.0ms │ {NODE}", screen
    )
    assert "Tasks by state: SUCCESS 1" in screen


@pytest.mark.slow
@ON_SQLITE_AND_REDIS
def test_dump_prints_a_tasks_events_as_they_come(
    start_worker: StartWorker, client: Celeriac, broker: Broker, tmp_path: Path
) -> None:
    start_worker("-E", concurrency=1)
    output = tmp_path / "dump.txt"
    with output.open("w") as sink:
        dump = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", "sigproj", "events", "--dump"],
            cwd=tmp_path,
            env=subprocess_env(broker, tmp_path / "signals.jsonl"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # The dump wakes the worker up: its heartbeat shows the capture has begun.
        assert wait_for(lambda: f"{NODE} [" in output.read_text(), timeout=15), output.read_text()
        result = client.send_task("sigproj.add", (2, 3))
        assert result.get(timeout=15) == 5
        assert wait_for(lambda: "task succeeded" in output.read_text(), timeout=10)

        dump.send_signal(signal.SIGINT)
        assert dump.wait(timeout=10) == 0
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    lines = output.read_text().splitlines()

    task = rf"sigproj\.add\({result.id}\) args=\(2, 3\) kwargs=\{{\}}"
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00\]"
    assert lines[0] == "-> evdump: starting capture..."
    assert any(re.fullmatch(rf"{NODE} {stamp} heartbeat: active=\d+, .*", line) for line in lines)
    assert any(
        re.fullmatch(rf"{NODE} {stamp} task received: {task} clock=.*", line) for line in lines
    )
    assert any(
        re.fullmatch(rf"{NODE} {stamp} task succeeded: {task} clock=.*, result=5, .*", line)
        for line in lines
    )


class Tmux:
    """A tmux server of the test's own (its own socket), running one command in a
    160x50 pane; the command gets the test's environment, as the server does."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    def start(self, command: str, env: dict[str, str]) -> int:
        """Start the session; return the pid of the pane's process."""
        self.run("new-session", "-d", "-s", "main", "-x", "160", "-y", "50", command, env=env)
        return int(self.run("display-message", "-p", "-t", "main", "#{pane_pid}"))

    def screen(self) -> str:
        """The text on the pane now."""
        return self.run("capture-pane", "-p", "-t", "main")

    def stop(self, pane_pid: int | None) -> None:
        """Kill the pane's shell and its children by pid, then the server."""
        if pane_pid is not None:
            children = Path(f"/proc/{pane_pid}/task/{pane_pid}/children")
            pids = children.read_text().split() if children.exists() else []
            for pid in [pane_pid, *map(int, pids)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
        )


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """A private tmux server; skipped with the reason if tmux is missing (fails under CI)."""
    if shutil.which("tmux") is None:
        reason = "tmux is not installed: the live view of `celeriac events` needs a terminal"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    # A short path: a unix socket's path must stay under about 100 bytes.
    server = Tmux(Path("/tmp") / f"celeriac-tmux-{uuid.uuid4().hex[:12]}")
    yield server
    server.socket.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.timeout(120)
@ON_SQLITE_AND_REDIS
def test_live_view_shows_the_busy_workers_tasks(
    start_worker: StartWorker, client: Celeriac, broker: Broker, tmp_path: Path, tmux: Tmux
) -> None:
    start_worker("-E", concurrency=2)
    exit_file = tmp_path / "events.exit"
    events = shlex.join([sys.executable, "-m", "celeriac", "-A", "sigproj", "events", "-F", "0.2"])
    command = (
        f"cd {shlex.quote(str(tmp_path))} && {events}; echo $? > {shlex.quote(str(exit_file))}"
    )
    env = subprocess_env(broker, tmp_path / "signals.jsonl")
    # pytest-xdist sets COLUMNS=80 and LINES=24, which rich would take over the pane's size.
    for name in ("COLUMNS", "LINES"):
        env.pop(name, None)
    pane_pid = None
    try:
        pane_pid = tmux.start(command, env)
        # The heartbeat broadcast at start makes the worker show up before any task runs.
        assert wait_for(lambda: "ONLINE" in tmux.screen(), timeout=20), tmux.screen()
        idle = tmux.screen()
        added = [client.send_task("sigproj.add", (n, n)) for n in range(200)]
        slow = [client.send_task("sigproj.slow", (4.0,)) for _ in range(2)]
        assert wait_for(lambda: bool(SLOW_STARTED.search(tmux.screen())), 30), tmux.screen()
        busy = tmux.screen()
        [result.get(timeout=30) for result in [*added, *slow]]
        assert wait_for(lambda: "SUCCESS 202" in tmux.screen(), timeout=15), tmux.screen()
        done = tmux.screen()

        tmux.run("send-keys", "-t", "main", "C-c")
        assert wait_for(exit_file.exists, timeout=10), tmux.screen()
    finally:
        tmux.stop(pane_pid)

    assert f"{NODE}" in idle
    assert "Recent tasks" in idle
    assert re.search(rf"│ {NODE}\s+│ ONLINE\s+│ \d+\.\ds ago\s+│ [\d.]+ [\d.]+ [\d.]+", busy)
    assert "sigproj.add" in done
    assert re.search(r"│ sigproj\.slow\s+│ SUCCESS\s+│ \d\d:\d\d:\d\d │\s+4\.\d+s │ w0@e2e", done)
    assert "Tasks by state: SUCCESS 202" in done
    assert exit_file.read_text().strip() == "0"
