"""The main job on the embedded default: a worker process, tasks from this one, results back.

Runs ``celeriac -A tasks worker`` on an SQLite file in a temporary folder, sends tasks
that succeed, retry then succeed, fail, and expire, then a chain and a chord, prints their
results and the signals the worker saw, then stops the worker with SIGTERM (a warm
shutdown).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_until_ready(signal_log: Path, worker: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for the worker's ``worker_ready`` signal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if signal_log.exists() and "worker_ready" in signal_log.read_text():
            return
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited early with code {worker.returncode}")
        time.sleep(0.05)
    raise SystemExit("the worker did not become ready in time")


def run_demo(folder: Path) -> int:
    """Run the demo in ``folder``; return the exit code."""
    broker = f"sqlite:///{folder / 'demo.sqlite3'}"
    signal_log = folder / "signals.jsonl"
    os.environ["CELERIAC_BROKER_URL"] = broker
    os.environ["DEMO_SIGNALS"] = str(signal_log)
    sys.path.insert(0, str(HERE))
    import tasks

    from celeriac import chain, chord
    from celeriac.exceptions import TaskRevokedError

    print(f"broker and result store: {broker}")
    environment = dict(os.environ, PYTHONPATH=str(HERE))
    command = [sys.executable, "-m", "celeriac", "-A", "tasks", "worker"]
    command += ["-P", "prefork", "-c", "2", "-l", "warning", "-n", "demo@%h"]
    worker = subprocess.Popen(command, cwd=HERE, env=environment)
    try:
        wait_until_ready(signal_log, worker, timeout=30)
        print(f"worker started (pid {worker.pid})\n")

        started = time.perf_counter()
        total = tasks.add.delay(2, 3).get(timeout=10)
        print(f"add(2, 3)            -> {total}  ({(time.perf_counter() - started) * 1000:.1f} ms)")
        page = tasks.fetch_page.delay("https://example.org").get(timeout=20)
        print(f"fetch_page(...)      -> {page}")
        try:
            tasks.divide.delay(1, 0).get(timeout=10)
        except ZeroDivisionError as exc:
            print(f"divide(1, 0)         -> raised ZeroDivisionError({exc})")
        expired = tasks.roll_dice.apply_async(expires=-1)
        try:
            expired.get(timeout=10)
        except TaskRevokedError:
            print(f"roll_dice(expired)   -> {expired.state} (not run)")
        many = [tasks.add.delay(i, i) for i in range(100)]
        print(f"100 x add            -> sum {sum(result.get(timeout=20) for result in many)}")
        steps = chain(tasks.add.s(1, 2), tasks.add.s(10), tasks.add.s(100))()
        print(f"add(1,2)|add(10)|add(100) -> {steps.get(timeout=10)}")
        started = time.perf_counter()
        fan_in = chord(tasks.add.s(i, i) for i in range(100))(tasks.tsum.s())
        elapsed = f"{(time.perf_counter() - started) * 1000:.0f} ms"
        print(f"chord(100 x add)(tsum) -> {fan_in.get(timeout=30)}  (sent in {elapsed})")
    finally:
        worker.send_signal(signal.SIGTERM)
        exitcode = worker.wait(timeout=30)
    records = [json.loads(line) for line in signal_log.read_text().splitlines()]
    print(f"\nworker stopped with exit code {exitcode}; signals seen:")
    for name, count in Counter(record["signal"] for record in records).items():
        print(f"  {name:24} x{count}")
    return exitcode


def main() -> int:
    """Run the demo in a temporary folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="celeriac-demo-") as folder:
        return run_demo(Path(folder))


if __name__ == "__main__":
    sys.exit(main())
