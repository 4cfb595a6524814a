"""Real ``celeriac beat`` and ``worker -B`` processes: two beats on one broker send each run
once and the standby takes over from a killed leader; a worker runs beat in a thread."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from tests.beat.conftest import BeatBroker, beat_broker

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SEND = re.compile(r"Sending due task tick \(beatproj\.tick\) due (\S+)")
INTERVAL = 0.1
TAKEOVER_LIMIT = 5.0
EARLY = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@dataclass
class Process:
    """A ``celeriac -A beatproj ...`` child and the file its output goes to."""

    process: subprocess.Popen[bytes]
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def sends(self) -> list[datetime.datetime]:
        """The due times of the runs this process sent, from its log."""
        return [datetime.datetime.fromisoformat(due) for due in SEND.findall(self.log())]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


@contextmanager
def launcher(folder: Path, broker: BeatBroker) -> Iterator[Callable[..., Process]]:
    """Start ``celeriac -A beatproj <arguments>`` children; each is killed by PID after."""
    started: list[Process] = []
    env = {
        **os.environ,
        **broker.env(),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "BEATPROJ_LOG": str(folder / "events.jsonl"),
        "BEATPROJ_INTERVAL": str(INTERVAL),
    }

    def launch(name: str, *arguments: str) -> Process:
        output = folder / f"{name}.log"
        command = [sys.executable, "-m", "celeriac", "-A", "beatproj", *arguments, "-l", "info"]
        with output.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=folder
            )
        started.append(Process(process, output))
        return started[-1]

    try:
        yield launch
    finally:
        for child in started:
            if child.process.poll() is None:
                os.kill(child.process.pid, signal.SIGKILL)
            child.process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, *logs: Process) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {log.output.name}\n{log.log()[-3000:]}" for log in logs)
            pytest.fail(f"timed out waiting for {what}\n{shown}")
        time.sleep(0.02)


def events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def queued(broker: BeatBroker, queue: str = "celery") -> int:
    client = Celeriac("counter", broker=broker.url, set_as_current=False)
    client.conf.broker_transport_options = broker.options
    with client:
        return client.transport.queue_size(queue)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "rabbitmq"])
def test_two_beats_send_each_run_once_and_the_standby_takes_over_a_killed_leader(
    kind: str, tmp_path: Path
) -> None:
    with beat_broker(kind, tmp_path) as broker, launcher(tmp_path, broker) as launch:
        first = launch("first", "beat")
        wait_for(lambda: "beat: leading as" in first.log(), 30, "a leader", first)
        second = launch("second", "beat")
        wait_for(lambda: "beat: Starting" in second.log(), 30, "the standby", second)
        beats = (first, second)
        wait_for(lambda: sum(len(each.sends()) for each in beats) >= 30, 30, "30 runs", *beats)

        # The leader is whoever sent the latest run (a slow machine may have switched).
        leader, standby = sorted(beats, key=lambda each: max(each.sends(), default=EARLY))[::-1]
        sent_before = len(standby.sends())
        os.kill(leader.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: len(standby.sends()) > sent_before, 10, "the takeover", standby)
        takeover = time.monotonic() - killed_at
        wait_for(lambda: len(standby.sends()) >= sent_before + 25, 30, "25 more runs", standby)
        assert standby.stop() == 0

        runs = first.sends() + second.sends()
        messages = queued(broker)

    assert takeover < TAKEOVER_LIMIT
    assert len(set(runs)) == len(runs) >= 55
    # A leader killed between logging a run and publishing it sends one message less.
    assert len(runs) - 1 <= messages <= len(runs)
    step = datetime.timedelta(seconds=INTERVAL)
    assert all((run - runs[0]) % step == datetime.timedelta() for run in runs)
    starts = [event for event in events(tmp_path) if event["event"].startswith("beat_")]
    assert [(event["event"], event["sender"]) for event in starts] == [("beat_init", "Service")] * 2
    assert "beat: Shutting down" in standby.log()


def test_worker_dash_b_runs_beat_in_a_thread_and_fires_beat_embedded_init(
    tmp_path: Path,
) -> None:
    with beat_broker("sqlite", tmp_path) as broker, launcher(tmp_path, broker) as launch:
        worker = launch("worker", "worker", "-B", "-P", "threads", "-c", "2")
        wait_for(
            lambda: sum(event["event"] == "tick" for event in events(tmp_path)) >= 3,
            30,
            "three periodic tasks run by the worker",
            worker,
        )
        assert worker.stop() == 0

    recorded = events(tmp_path)
    pids = {event["pid"] for event in recorded}
    starts = [(event["event"], event["sender"]) for event in recorded if event["event"] != "tick"]
    assert pids == {worker.process.pid}
    assert starts == [("beat_init", "Service"), ("beat_embedded_init", "Service")]
    assert {event["number"] for event in recorded if event["event"] == "tick"} == {7}
    assert "beat: Shutting down" in worker.log()


def test_a_restarted_beat_neither_repeats_nor_skips_a_run(tmp_path: Path) -> None:
    # No broker that can hold the state: it goes to the -s file.
    broker = BeatBroker("memory", "memory://restart")
    schedule_file = tmp_path / "beat-state.db"
    with launcher(tmp_path, broker) as launch:
        before = launch("before", "beat", "-s", str(schedule_file))
        wait_for(lambda: len(before.sends()) >= 5, 30, "five runs", before)
        assert before.stop() == 0
        time.sleep(3 * INTERVAL)
        after = launch("after", "beat", "-s", str(schedule_file))
        wait_for(lambda: len(after.sends()) >= 3, 30, "three runs after the restart", after)
        assert after.stop() == 0

    first_runs, later_runs = before.sends(), after.sends()
    step = datetime.timedelta(seconds=INTERVAL)
    assert f"state:       {schedule_file}" in before.log()
    # Not repeated: the restarted beat goes on after the last run sent.
    assert later_runs[0] > first_runs[-1]
    # Not skipped: the runs due while no beat ran are sent at once, as one.
    assert later_runs[0] - first_runs[-1] > step
    assert later_runs[1] - later_runs[0] == step
    assert all((run - first_runs[0]) % step == datetime.timedelta() for run in later_runs)
