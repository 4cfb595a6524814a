"""The bench: celeriac and its peers on one Redis (and RabbitMQ), one system after another.

Usage: ``make bench`` or ``bench/.venv/bin/python bench/run.py [--tasks N] [--round-trips N]
[--repeat N] [--only celeriac,celery,...] [--broker redis|amqp|all]``.

For every row of the table and every repeat, on a flushed Redis database 15: a client
queues the drain one task at a time (the enqueue rate); a worker started afterwards
drains it (the drain rate, between two marker tasks, and the worker's peak RSS summed
over its processes); where the system has a batch call, a client queues with it; then
a worker with results enabled answers one call at a time (the round trip). Clients run
in processes of their own (``peers/client.py``), one adapter module per system in
``peers/``. Each figure is the median of the repeats; the table gives it with its ratio
to Celery on the same broker. It is printed and written to ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
import redis

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
RESULTS_FILE = HERE / "results.md"
REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
QUEUE = "bench"
MARKER_PREFIX = "bench:mark:"
SAMPLE_EVERY = 0.1
STOP_TIMEOUT = 30.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Row:
    """One line of the table: a system in one worker mode on one broker."""

    system: str
    module: str
    mode: str
    broker: str

    @property
    def broker_url(self) -> str:
        """Where this row's tasks are queued."""
        return AMQP_URL if self.broker == "amqp" else REDIS_URL


ROWS = [
    Row("Celery", "celery_peer", "prefork", "redis"),
    Row("celeriac", "celeriac_peer", "prefork", "redis"),
    Row("celeriac", "celeriac_peer", "threads", "redis"),
    Row("Dramatiq", "dramatiq_peer", "processes", "redis"),
    Row("Huey", "huey_peer", "processes", "redis"),
    Row("taskiq", "taskiq_peer", "processes", "redis"),
    Row("arq", "arq_peer", "asyncio", "redis"),
    Row("RQ", "rq_peer", "pool", "redis"),
    Row("Celery", "celery_peer", "prefork", "amqp"),
    Row("celeriac", "celeriac_peer", "prefork", "amqp"),
]


@dataclass
class Figures:
    """The measurements of one row, one list entry per repeat."""

    enqueue: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)
    drain: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p90: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        """The median of one measurement, or None when it was not taken."""
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else None


@dataclass
class Outcome:
    """What became of one row: its description and figures, or why it was skipped."""

    row: Row
    description: dict[str, Any]
    figures: Figures = field(default_factory=Figures)
    worker_command: list[str] = field(default_factory=list)
    skipped: str | None = None


def environment(broker_url: str, results: bool) -> dict[str, str]:
    """The environment of a client or worker process of the bench."""
    env = dict(os.environ, PYTHONPATH=str(PEERS), BENCH_BROKER_URL=broker_url)
    env["BENCH_MARKER_URL"] = REDIS_URL
    env.pop("BENCH_RESULT_URL", None)
    if results:
        env["BENCH_RESULT_URL"] = REDIS_URL
    return env


def client(row: Row, action: str, number: int, results: bool = False) -> Any:
    """Run one client measurement in a process of its own and return its JSON answer."""
    command = [sys.executable, "client.py", row.module, action, str(number)]
    completed = subprocess.run(
        command,
        cwd=PEERS,
        env=environment(row.broker_url, results),
        capture_output=True,
        text=True,
        timeout=600 + number / 50,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{row.module} {action} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def reset(row: Row) -> None:
    """Empty database 15 (only the bench uses it) and, on RabbitMQ, the bench's queues."""
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.flushdb()
    finally:
        connection.close()
    if row.broker == "amqp":
        broker = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
        broker.connect()
        try:
            channel = broker.channel()
            for queue in (QUEUE, f"{QUEUE}.dead_letter"):
                channel.queue_delete(queue)
        finally:
            broker.close()


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid``, from /proc; empty once it is gone."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, index = [pid], 0
    while index < len(tree):
        tree += children_of(tree[index])
        index += 1
    return tree


def rss_bytes(pids: list[int]) -> int:
    """The resident set sizes of ``pids`` added up; vanished processes count nothing."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (to tell it from a later process with its id)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def running_worker(outcome: Outcome, results: bool, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start the row's worker and stop it, and every process it started, by PID at the end."""
    row = outcome.row
    with log.open("ab") as output:
        worker = subprocess.Popen(
            outcome.worker_command,
            cwd=PEERS,
            env=environment(row.broker_url, results),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    seen: dict[int, str | None] = {}
    try:
        yield worker
    finally:
        for pid in process_tree(worker.pid):
            seen[pid] = start_time(pid)
        stop(worker, seen)


def stop(worker: subprocess.Popen[bytes], seen: dict[int, str | None]) -> None:
    """Warm-stop the worker (SIGTERM), then kill it and any child of it still alive."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=STOP_TIMEOUT)
    for pid, started in seen.items():
        if pid != worker.pid and started is not None and start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def marker(name: str) -> float | None:
    """When the marker task ``name`` ran, or None if it has not yet."""
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        value = connection.get(MARKER_PREFIX + name)
    finally:
        connection.close()
    return float(value) if value is not None else None


def drain(outcome: Outcome, tasks: int, log: Path) -> tuple[float, float]:
    """Tasks/s a fresh worker drains the queued no-ops at, and its peak RSS in MB."""
    row = outcome.row
    peak = 0
    deadline = time.monotonic() + 120 + tasks / 20
    with running_worker(outcome, results=False, log=log) as worker:
        while (finished := marker("end")) is None:
            if worker.poll() is not None:
                raise RuntimeError(f"the {row.system} worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {row.system} worker did not drain in time")
            peak = max(peak, rss_bytes(process_tree(worker.pid)))
            time.sleep(SAMPLE_EVERY)
    started = marker("start")
    if started is None:
        raise RuntimeError("the end marker ran before the start marker")
    return tasks / (finished - started), peak / 2**20


def round_trip(outcome: Outcome, samples: int, log: Path) -> tuple[float, float, float]:
    """p50, p90 and p99 in ms of call-then-wait, against a worker with results enabled."""
    with running_worker(outcome, results=True, log=log):
        timings = client(outcome.row, "round-trips", samples, results=True)
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]


def measure_once(outcome: Outcome, options: argparse.Namespace, log: Path) -> None:
    """One repeat of every measurement of the outcome's row, added to its figures."""
    row, figures = outcome.row, outcome.figures
    reset(row)
    figures.enqueue.append(client(row, "fill", options.tasks))
    drained, rss = drain(outcome, options.tasks, log)
    figures.drain.append(drained)
    figures.rss_mb.append(rss)
    if outcome.description["batch"]:
        reset(row)
        figures.batch.append(client(row, "batch", options.tasks))
    reset(row)
    p50, p90, p99 = round_trip(outcome, options.round_trips, log)
    figures.p50.append(p50)
    figures.p90.append(p90)
    figures.p99.append(p99)
    reset(row)


def measure(row: Row, options: argparse.Namespace, log: Path) -> Outcome:
    """Describe the row's system, then measure it ``--repeat`` times (or say why not)."""
    description = client(row, "describe", 0)
    outcome = Outcome(row, description)
    if description["unavailable"]:
        outcome.skipped = description["unavailable"]
        return outcome
    outcome.worker_command = worker_command_of(row)
    for repeat in range(options.repeat):
        print(f"  {row.system} {row.mode} on {row.broker}, run {repeat + 1}", flush=True)
        try:
            measure_once(outcome, options, log)
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            outcome.skipped = f"failed: {error} (worker log: {log})"
            return outcome
    return outcome


def worker_command_of(row: Row) -> list[str]:
    """Ask the adapter, in the bench's environment, for its worker command."""
    code = (
        "import json, sys, importlib; "
        f"print(json.dumps(importlib.import_module({row.module!r}).worker_command({row.mode!r})))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PEERS,
        env=environment(row.broker_url, False),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    command: list[str] = json.loads(completed.stdout)
    return command


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def server_versions() -> str:
    """The Redis and RabbitMQ versions, for the table's header."""
    parts = []
    with contextlib.suppress(redis.RedisError):
        connection = redis.Redis.from_url(REDIS_URL)
        parts.append(f"Redis {connection.info('server')['redis_version']}")
        connection.close()
    with contextlib.suppress(OSError, amqp.AMQPError):
        broker = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest")
        broker.connect()
        version = broker.server_properties.get("version", "?")
        parts.append(f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}")
        broker.close()
    return ", ".join(parts)


COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [
    ("enqueue", "enqueue (tasks/s)", lambda value: f"{value:,.0f}"),
    ("batch", "batch enqueue (tasks/s)", lambda value: f"{value:,.0f}"),
    ("drain", "drain (tasks/s)", lambda value: f"{value:,.0f}"),
    ("p50", "round trip p50 (ms)", lambda value: f"{value:.2f}"),
    ("p90", "p90 (ms)", lambda value: f"{value:.2f}"),
    ("p99", "p99 (ms)", lambda value: f"{value:.2f}"),
    ("rss_mb", "worker peak RSS (MB)", lambda value: f"{value:,.0f}"),
]


def cell(
    outcome: Outcome, reference: Outcome | None, name: str, show: Callable[[float], str]
) -> str:
    """One figure with its ratio to the reference row's."""
    value = outcome.figures.median(name)
    if value is None:
        return "—"
    base = reference.figures.median(name) if reference is not None else None
    if not base:
        return show(value)
    return f"{show(value)} ({value / base:.2f}x)"


def render(outcomes: list[Outcome], options: argparse.Namespace) -> str:
    """The markdown report: header, table and footnotes."""
    references = {
        outcome.row.broker: outcome
        for outcome in outcomes
        if outcome.row.system == "Celery" and not outcome.skipped
    }
    lines = [
        f"Bench of {time.strftime('%Y-%m-%d')} on {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {server_versions()}. "
        f"Median of {options.repeat} runs; drain of {options.tasks:,} no-op tasks; "
        f"round trip over {options.round_trips} calls; (x) is the ratio to Celery "
        "on the same broker (higher is better for rates, lower for times and memory).",
        "",
        "| system | broker | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    notes: list[str] = []
    for outcome in outcomes:
        row = outcome.row
        note = len(notes) + 1
        description = outcome.description
        label = f"{row.system} {row.mode} [{note}]"
        broker = "RabbitMQ" if row.broker == "amqp" else "Redis"
        text = (
            f"[{note}] {row.system} {description.get('version', '?')}: "
            f"{description.get('modes', {}).get(row.mode, row.mode)}; "
            f"results: {description.get('results', '?')}"
        )
        if description.get("batch"):
            text += f"; batch: {description['batch']}"
        if outcome.skipped:
            lines.append(f"| {label} | {broker} | " + " | ".join("—" for _ in COLUMNS) + " |")
            text += f". **Not measured: {outcome.skipped}**"
        else:
            reference = references.get(row.broker)
            cells = [cell(outcome, reference, name, show) for name, _, show in COLUMNS]
            lines.append(f"| {label} | {broker} | " + " | ".join(cells) + " |")
        notes.append(text)
    lines += ["", *notes, "", FOOTER]
    return "\n".join(lines) + "\n"


FOOTER = (
    "Enqueue: one client sends one task at a time (after a warm-up of up to 200 sends), "
    "each system with its default serializer and results off. Drain: the queue is filled "
    "first, then a worker is started; the rate is timed between a marker task queued before "
    "the no-ops and one queued after them, so start-up is excluded. RSS: the worker's "
    "processes summed, sampled from /proc every 0.1 s during the drain. Round trip: one call "
    "then a wait for its result through the system's own result mechanism on the same "
    "Redis, 20 calls of warm-up excluded. RabbitMQ rows keep results and markers on Redis."
)


def selected_rows(options: argparse.Namespace) -> list[Row]:
    """The rows chosen by ``--only`` and ``--broker``."""
    brokers = {"redis", "amqp"} if options.broker == "all" else {options.broker}
    only = {name.strip().lower() for name in options.only.split(",")} if options.only else None
    return [
        row
        for row in ROWS
        if row.broker in brokers and (only is None or row.system.lower() in only)
    ]


def interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so the running worker is stopped on the way out."""
    raise KeyboardInterrupt


def main() -> int:
    """Measure the selected rows one after another, then print and save the table."""
    signal.signal(signal.SIGTERM, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="no-ops to enqueue and drain")
    parser.add_argument("--round-trips", type=int, default=200, help="round trip samples")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--only", default="", help="comma-separated systems, e.g. celeriac,celery")
    parser.add_argument("--broker", choices=["redis", "amqp", "all"], default="all")
    options = parser.parse_args()
    if options.tasks < 10 or options.round_trips < 2 or options.repeat < 1:
        parser.error("--tasks must be at least 10, --round-trips 2 and --repeat 1")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as folder:
        for row in selected_rows(options):
            log = Path(folder) / f"{row.module}-{row.mode}-{row.broker}.log"
            outcome = measure(row, options, log)
            if outcome.skipped:
                print(f"  {row.system} {row.mode} on {row.broker}: {outcome.skipped}", flush=True)
                if log.exists():
                    print(log.read_text()[-2000:], flush=True)
            outcomes.append(outcome)
    report = render(outcomes, options)
    print()
    print(report)
    RESULTS_FILE.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
