"""The bench: celeriac and its peers on one Redis (and RabbitMQ), one system after another.

Usage: ``make bench`` or ``bench/.venv/bin/python bench/run.py [--tasks N] [--round-trips N]
[--repeat N] [--only celeriac,celery,...] [--broker redis|amqp|all]
[--scenarios all|basic|workflows] [--chord-size N] [--chain-length N] [--workflow-timeout S]``.

For every row of the table and every repeat, on a flushed Redis database 15: a client
queues the drain one task at a time (the enqueue rate); a worker started afterwards
drains it (the drain rate, between two marker tasks, and the worker's peak RSS summed
over its processes); where the system has a batch call, a client queues with it; then
a worker with results enabled answers one call at a time (the round trip). The
workflows, on Redis only and where the system has the primitive natively: a fresh worker
with results enabled runs a chord (a header of additions, a body that sums them), then
another a chain of additions, each timed by the client from building it to holding the
checked final result. Clients run in processes of their own (``peers/client.py``), one
adapter module per system in ``peers/``. Each figure is the median of the repeats; the
tables give it with its ratio to Celery on the same broker. They are printed and written
to ``bench/results.md``, where a run replaces only the tables it measured.
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
WORKFLOWS = ("chord", "chain")
WORKFLOWS_HEADING = "## Workflows"


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
    Row("celeriac", "celeriac_peer", "prefork-events", "redis"),
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
    chord: list[float] = field(default_factory=list)
    chain: list[float] = field(default_factory=list)

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
    workflow_problems: dict[str, str] = field(default_factory=dict)


def environment(broker_url: str, results: bool) -> dict[str, str]:
    """The environment of a client or worker process of the bench."""
    env = dict(os.environ, PYTHONPATH=str(PEERS), BENCH_BROKER_URL=broker_url)
    env["BENCH_MARKER_URL"] = REDIS_URL
    env.pop("BENCH_RESULT_URL", None)
    if results:
        env["BENCH_RESULT_URL"] = REDIS_URL
    return env


def client(
    row: Row, action: str, number: int, results: bool = False, limit: float | None = None
) -> Any:
    """Run one client measurement in a process of its own and return its JSON answer.

    ``limit`` is a workflow's timeout in seconds, passed on to the client, which is
    given a minute more to start, check the worker is up and answer.
    """
    command = [sys.executable, "client.py", row.module, action, str(number)]
    if limit is not None:
        command.append(str(limit))
    completed = subprocess.run(
        command,
        cwd=PEERS,
        env=environment(row.broker_url, results),
        capture_output=True,
        text=True,
        timeout=600 + number / 50 if limit is None else limit + 60,
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


def measure_workflows(outcome: Outcome, options: argparse.Namespace, log: Path) -> None:
    """One repeat of the row's workflows, each with a fresh worker on a flushed database.

    A workflow that timed out or failed is noted and not run again for this row.
    """
    row = outcome.row
    sizes = {"chord": options.chord_size, "chain": options.chain_length}
    for name in WORKFLOWS:
        if not outcome.description[name] or name in outcome.workflow_problems:
            continue
        reset(row)
        try:
            with running_worker(outcome, results=True, log=log):
                answer = client(row, name, sizes[name], True, options.workflow_timeout)
        except subprocess.TimeoutExpired:
            waited = options.workflow_timeout
            answer = {"timeout": f"the client was still waiting after {waited:g} s"}
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            last_line = str(error).strip().splitlines()[-1]
            outcome.workflow_problems[name] = f"failed: {last_line} (worker log: {log})"
            continue
        if "timeout" in answer:
            outcome.workflow_problems[name] = f"timeout: {answer['timeout']}"
        else:
            getattr(outcome.figures, name).append(answer["seconds"])
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
        if options.scenarios != "workflows":
            try:
                measure_once(outcome, options, log)
            except (RuntimeError, subprocess.SubprocessError, OSError) as error:
                outcome.skipped = f"failed: {error} (worker log: {log})"
                return outcome
        if options.scenarios != "basic" and row.broker == "redis":
            measure_workflows(outcome, options, log)
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


def machine() -> str:
    """The date, the machine and the servers, for a table's header."""
    return (
        f"Bench of {time.strftime('%Y-%m-%d')} on {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {server_versions()}."
    )


def render(outcomes: list[Outcome], options: argparse.Namespace) -> str:
    """The markdown report of the enqueue, drain and round trip: header, table, footnotes."""
    references = {
        outcome.row.broker: outcome
        for outcome in outcomes
        if outcome.row.system == "Celery" and not outcome.skipped
    }
    lines = [
        f"{machine()} Median of {options.repeat} runs; drain of {options.tasks:,} no-op tasks; "
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


def workflow_cell(outcome: Outcome, reference: Outcome | None, name: str, timeout: float) -> str:
    """Seconds for one workflow with the ratio to Celery's, or why there are none."""
    if not outcome.description.get(name):
        return "n/a"
    problem = outcome.workflow_problems.get(name)
    if problem is not None:
        return f"timeout (> {timeout:g} s)" if problem.startswith("timeout") else "failed"
    value = outcome.figures.median(name)
    if value is None:
        return "—"
    usable = reference is not None and name not in reference.workflow_problems
    base = reference.figures.median(name) if usable and reference is not None else None
    if not base:
        return f"{value:.2f}"
    return f"{value:.2f} ({value / base:.2f}x)"


def render_workflows(outcomes: list[Outcome], options: argparse.Namespace) -> str:
    """The markdown report of the chord and the chain, under its own heading."""
    redis_rows = [outcome for outcome in outcomes if outcome.row.broker == "redis"]
    reference = next((outcome for outcome in redis_rows if outcome.row.system == "Celery"), None)
    lines = [
        WORKFLOWS_HEADING,
        "",
        f"{machine()} Median of {options.repeat} runs, in seconds from building the "
        "workflow to holding its checked final result, each on a fresh worker with results "
        f"on Redis; timeout {options.workflow_timeout:g} s. Chord: a header of "
        f"{options.chord_size:,} `add(i, i)` and a body that sums their results. Chain: "
        f"{options.chain_length:,} `add` links, each adding 1 to the previous result. (x) is "
        "the ratio to Celery (lower is better); n/a: the system has no native primitive.",
        "",
        f"| system | chord of {options.chord_size:,} (s) | chain of {options.chain_length:,} (s) |",
        "|---|---:|---:|",
    ]
    notes: list[str] = []
    for outcome in redis_rows:
        row, description = outcome.row, outcome.description
        note = len(notes) + 1
        label = f"{row.system} {row.mode} [{note}]"
        if outcome.skipped:
            lines.append(f"| {label} | — | — |")
            notes.append(f"[{note}] **Not measured: {outcome.skipped}**")
            continue
        cells = [
            workflow_cell(outcome, reference, name, options.workflow_timeout) for name in WORKFLOWS
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        text = (
            f"[{note}] {row.system} {description.get('version', '?')}, "
            f"{description.get('modes', {}).get(row.mode, row.mode)}. "
            f"Chord: {description.get('chord') or 'none'}. "
            f"Chain: {description.get('chain') or 'none'}."
        )
        for name in WORKFLOWS:
            if name in outcome.workflow_problems:
                text += f" **{name.capitalize()} {outcome.workflow_problems[name]}**"
        notes.append(text)
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


def save(basic: str | None, workflows: str | None) -> None:
    """Write the tables measured to ``bench/results.md``, keeping the other one there."""
    kept_basic, kept_workflows = "", ""
    if RESULTS_FILE.exists():
        before, heading, after = RESULTS_FILE.read_text().partition(WORKFLOWS_HEADING)
        kept_basic, kept_workflows = before.rstrip("\n"), (heading + after).rstrip("\n")
    parts = [
        (basic if basic is not None else kept_basic).rstrip("\n"),
        (workflows if workflows is not None else kept_workflows).rstrip("\n"),
    ]
    RESULTS_FILE.write_text("\n\n".join(part for part in parts if part) + "\n")


def selected_rows(options: argparse.Namespace) -> list[Row]:
    """The rows chosen by ``--only``, ``--broker`` and ``--scenarios``."""
    brokers = {"redis", "amqp"} if options.broker == "all" else {options.broker}
    if options.scenarios == "workflows":
        brokers &= {"redis"}
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
    parser.add_argument(
        "--scenarios",
        choices=["all", "basic", "workflows"],
        default="all",
        help="basic: enqueue, drain, round trip; workflows: chord and chain (Redis only)",
    )
    parser.add_argument("--chord-size", type=int, default=10_000, help="tasks in the chord")
    parser.add_argument("--chain-length", type=int, default=1_000, help="links in the chain")
    parser.add_argument(
        "--workflow-timeout", type=float, default=300.0, help="seconds one workflow may take"
    )
    options = parser.parse_args()
    if options.tasks < 10 or options.round_trips < 2 or options.repeat < 1:
        parser.error("--tasks must be at least 10, --round-trips 2 and --repeat 1")
    if options.chord_size < 1 or options.chain_length < 1 or options.workflow_timeout <= 0:
        parser.error("--chord-size and --chain-length must be at least 1, --workflow-timeout > 0")
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
    basic = render(outcomes, options) if options.scenarios != "workflows" else None
    workflows = None
    if options.scenarios != "basic" and any(o.row.broker == "redis" for o in outcomes):
        workflows = render_workflows(outcomes, options)
    print()
    print("\n".join(report for report in (basic, workflows) if report is not None))
    save(basic, workflows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
