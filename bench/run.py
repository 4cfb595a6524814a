"""The bench: enqueue rate, drain rate and round trip on the embedded SQLite broker.

Usage: ``make bench`` or ``python bench/run.py [--tasks N] [--round-trips N]``.
Each figure is the median of ``--repeat`` runs; every run uses a fresh database file.
A later issue adds the peers (Celery, Dramatiq, RQ, Huey, arq, taskiq) on Redis.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_worker(queue: str, ready_file: Path, concurrency: int) -> subprocess.Popen[bytes]:
    """Start ``celeriac worker`` on ``queue`` and wait until it is ready."""
    ready_file.unlink(missing_ok=True)
    environment = dict(os.environ, PYTHONPATH=str(HERE), BENCH_READY_FILE=str(ready_file))
    command = [
        sys.executable,
        "-m",
        "celeriac",
        "-q",
        "-A",
        "bench_tasks",
        "worker",
        "-l",
        "warning",
    ]
    command += ["-P", "prefork", "-c", str(concurrency), "-Q", queue, "-n", f"bench-{queue}@%h"]
    worker = subprocess.Popen(command, cwd=HERE, env=environment)
    deadline = time.monotonic() + 30
    while not ready_file.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the bench worker did not start")
        time.sleep(0.01)
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm-stop the worker and wait for it."""
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


def measure_enqueue(tasks: int) -> float:
    """Tasks per second sent one ``delay`` at a time from one client."""
    import bench_tasks

    started = time.perf_counter()
    for _ in range(tasks):
        bench_tasks.noop.apply_async(queue="enqueue")
    return tasks / (time.perf_counter() - started)


def measure_drain(tasks: int, folder: Path, concurrency: int) -> float:
    """Tasks per second a worker of ``concurrency`` processes drains from a full queue."""
    import bench_tasks

    for _ in range(tasks):
        bench_tasks.noop.apply_async(queue="drain")
    marker = bench_tasks.echo.apply_async(("done",), queue="drain", priority=0)
    ready_file = folder / "ready-drain"
    worker = start_worker("drain", ready_file, concurrency)
    try:
        marker.get(timeout=600)
        while bench_tasks.app.transport.queue_size("drain"):
            time.sleep(0.01)
        finished = time.time()
    finally:
        stop_worker(worker)
    return (tasks + 1) / (finished - float(ready_file.read_text()))


def measure_round_trip(calls: int, folder: Path) -> tuple[float, float]:
    """p50 and p99 milliseconds from ``delay`` to ``get`` returning, one call at a time."""
    import bench_tasks

    worker = start_worker("celery", folder / "ready-rtt", 2)
    try:
        for _ in range(20):
            bench_tasks.echo.delay(1).get(timeout=10)
        timings = []
        for index in range(calls):
            started = time.perf_counter()
            bench_tasks.echo.delay(index).get(timeout=10)
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        stop_worker(worker)
    quantiles = statistics.quantiles(timings, n=100)
    return quantiles[49], quantiles[98]


def median_of(repeat: int, run: Callable[[Path], float]) -> float:
    """Run ``run`` in fresh folders and return the median."""
    values = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as folder:
            os.environ["CELERIAC_BROKER_URL"] = f"sqlite:///{folder}/bench.sqlite3"
            sys.modules.pop("bench_tasks", None)
            values.append(run(Path(folder)))
    return statistics.median(values)


def main() -> int:
    """Run every measurement and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    sys.path.insert(0, str(HERE))
    enqueue = median_of(options.repeat, lambda folder: measure_enqueue(options.tasks))
    drain = median_of(
        options.repeat, lambda folder: measure_drain(options.tasks, folder, options.concurrency)
    )
    p50s, p99s = [], []
    for _ in range(options.repeat):
        with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as folder:
            os.environ["CELERIAC_BROKER_URL"] = f"sqlite:///{folder}/bench.sqlite3"
            sys.modules.pop("bench_tasks", None)
            p50, p99 = measure_round_trip(options.round_trips, Path(folder))
            p50s.append(p50)
            p99s.append(p99)
    print(
        f"celeriac bench, SQLite broker, {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"median of {options.repeat} runs")
    print(f"  enqueue, one apply_async at a time   {enqueue:10,.0f} tasks/s")
    print(
        f"  drain {options.tasks:,} no-op tasks, prefork -c {options.concurrency}"
        f"  {drain:10,.0f} tasks/s"
    )
    print(f"  round trip delay() -> get()  p50     {statistics.median(p50s):10.2f} ms")
    print(f"  round trip delay() -> get()  p99     {statistics.median(p99s):10.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
