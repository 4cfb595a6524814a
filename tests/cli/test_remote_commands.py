"""``celeriac inspect``, ``control`` and ``status`` run for real against ``celeriac worker``
processes (node ``w0@e2e``), on the embedded SQLite broker and on Redis.

Each command is a ``python -m celeriac -A sigproj ...`` subprocess in the worker's folder;
its output must be Celery 5.7's, letter for letter where a script would parse it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac import Celeriac, states
from celeriac.exceptions import TaskRevokedError
from tests.e2e.conftest import Broker, WorkerProcess, run_celeriac, wait_for

pytestmark = pytest.mark.slow
ON_SQLITE_AND_REDIS = pytest.mark.parametrize("broker", ["sqlite", "redis"], indirect=True)
ON_SQLITE = pytest.mark.parametrize("broker", ["sqlite"], indirect=True)
NODE = "w0@e2e"
NO_REPLIES = "Error: No nodes replied within time constraint\n"
EX_UNAVAILABLE = 69

StartWorker = Callable[..., WorkerProcess]
RunCLI = Callable[..., subprocess.CompletedProcess[str]]


def is_running(client: Celeriac, task_id: str) -> bool:
    """Whether the worker has started ``task_id`` (and holds the next one reserved)."""
    active = client.control.inspect(destination=[NODE], timeout=2.0).active() or {}
    return any(request["id"] == task_id for request in active.get(NODE, []))


@pytest.fixture
def cli(broker: Broker, tmp_path: Path) -> RunCLI:
    """Run ``python -m celeriac -A sigproj ARGS`` beside the workers, on their broker."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_celeriac(broker, tmp_path, *args)

    return run


@ON_SQLITE_AND_REDIS
def test_inspect_prints_each_reply_as_celery_does(
    start_worker: StartWorker, client: Celeriac, cli: RunCLI
) -> None:
    start_worker(concurrency=1)
    running = client.send_task("sigproj.slow", (60.0,))
    waiting = client.send_task("sigproj.add", (1, 2))
    reserved = client.control.inspect(destination=[NODE], timeout=2.0).reserved
    assert wait_for(lambda: is_running(client, running.id), timeout=10)
    assert wait_for(lambda: bool((reserved() or {}).get(NODE)), timeout=10)

    ping = cli("inspect", "ping")
    active = cli("inspect", "active", "-d", NODE)
    registered = cli("inspect", "registered", "-d", NODE)
    stats = cli("inspect", "stats", "-d", NODE)
    where = cli("inspect", "query_task", running.id, waiting.id, "-d", NODE)
    terminated = cli("control", "terminate", "SIGKILL", running.id, "-d", NODE)

    assert (ping.returncode, ping.stdout) == (
        0,
        f"->  {NODE}: OK\n        pong\n\n1 node online.\n",
    )
    assert active.returncode == 0, active.stderr
    assert f"'id': '{running.id}'" in active.stdout
    assert "'name': 'sigproj.slow'" in active.stdout
    assert active.stdout.startswith(f"->  {NODE}: OK\n    * {{")
    assert "\n    * sigproj.add\n" in registered.stdout
    assert registered.stdout.endswith("\n\n1 node online.\n")
    assert '        "prefetch_count": ' in stats.stdout
    assert f'        "{running.id}": [\n            "active",' in where.stdout
    assert f'        "{waiting.id}": [\n            "reserved",' in where.stdout
    # terminate takes a signal, then the ids (Panel.meta: args, then variadic).
    assert terminated.stdout == f"->  {NODE}: OK\n        terminate: {running.id}\n"
    assert waiting.get(timeout=15) == 3


@ON_SQLITE_AND_REDIS
def test_json_output_is_the_replies_alone(
    start_worker: StartWorker, client: Celeriac, cli: RunCLI
) -> None:
    start_worker(concurrency=1)

    inspected = cli("inspect", "ping", "-j", "-d", NODE)
    controlled = cli("control", "rate_limit", "sigproj.add", "100/s", "--json", "-d", NODE)
    status = cli("status", "-j", "-d", NODE)

    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout) == {NODE: {"ok": "pong"}}
    # `control` prints app.control.broadcast's list of replies, as Celery does.
    assert json.loads(controlled.stdout) == [{NODE: {"ok": "new rate limit set successfully"}}]
    first, rest = status.stdout.split("\n", 1)
    assert json.loads(first) == {NODE: {"ok": "pong"}}
    assert rest == "\n1 node online.\n"


@ON_SQLITE_AND_REDIS
def test_control_converts_its_arguments_by_the_command_table(
    start_worker: StartWorker, client: Celeriac, cli: RunCLI
) -> None:
    start_worker(concurrency=1)
    blocker = client.send_task("sigproj.slow", (60.0,))
    victim = client.send_task("sigproj.add", (40, 2))
    assert wait_for(lambda: is_running(client, blocker.id), timeout=10)

    revoked = cli("control", "revoke", victim.id, "-d", NODE)
    rate = cli("control", "rate_limit", "sigproj.add", "10/m", "-d", NODE)
    grown = cli("control", "pool_grow", "2", "-d", NODE)
    stats = cli("inspect", "stats", "-j", "-d", NODE)
    cli("control", "terminate", "SIGKILL", blocker.id, "-d", NODE)

    assert revoked.stdout == f"->  {NODE}: OK\n        tasks {{'{victim.id}'}} flagged as revoked\n"
    assert rate.stdout == f"->  {NODE}: OK\n        new rate limit set successfully\n"
    assert grown.stdout == f"->  {NODE}: OK\n        pool will grow\n"
    assert json.loads(stats.stdout)[NODE]["pool"]["max-concurrency"] == 3
    with pytest.raises(TaskRevokedError):
        victim.get(timeout=10)
    assert victim.state == states.REVOKED


@ON_SQLITE_AND_REDIS
def test_control_shutdown_stops_the_worker_and_gets_no_reply(
    start_worker: StartWorker, cli: RunCLI
) -> None:
    worker = start_worker(concurrency=1)

    shutdown = cli("control", "shutdown", "-d", NODE)

    # Celery 5.7 too: shutdown sends no reply, so the command ends with its error.
    assert (shutdown.returncode, shutdown.stdout) == (EX_UNAVAILABLE, "")
    assert shutdown.stderr == NO_REPLIES
    assert worker.process.wait(timeout=20) == 0


@ON_SQLITE_AND_REDIS
def test_status_lists_the_workers_online_and_destination_narrows_it(
    start_worker: StartWorker, cli: RunCLI
) -> None:
    start_worker(concurrency=1)
    start_worker(concurrency=1)

    everyone = cli("status")
    one = cli("status", "--destination", "w1@e2e")
    two = cli("inspect", "ping", "-d", "w0@e2e,w1@e2e", "-j")

    assert everyone.returncode == 0, everyone.stderr
    assert sorted(everyone.stdout.splitlines()[:2]) == ["->  w0@e2e: OK", "->  w1@e2e: OK"]
    assert everyone.stdout.endswith("\n\n2 nodes online.\n")
    assert one.stdout == "->  w1@e2e: OK\n\n1 node online.\n"
    assert json.loads(two.stdout) == {node: {"ok": "pong"} for node in ("w0@e2e", "w1@e2e")}


@ON_SQLITE_AND_REDIS
def test_no_replies_is_celerys_error_and_exit_status(cli: RunCLI) -> None:
    status = cli("status", "-t", "0.3")
    inspected = cli("inspect", "ping", "-t", "0.3", "-d", "nobody@nowhere")
    controlled = cli("control", "heartbeat", "-t", "0.3", "--json")

    for result in (status, inspected, controlled):
        assert (result.returncode, result.stdout, result.stderr) == (EX_UNAVAILABLE, "", NO_REPLIES)


@ON_SQLITE_AND_REDIS
def test_the_apps_own_commands_are_accepted(start_worker: StartWorker, cli: RunCLI) -> None:
    worker = start_worker(concurrency=1)

    inspected = cli("inspect", "sigproj_queue_count", "-d", NODE)
    controlled = cli("control", "sigproj_pid", "-j", "-d", NODE)

    assert (
        inspected.stdout
        == f'->  {NODE}: OK\n    {{\n        "queues": 2\n    }}\n\n1 node online.\n'
    )
    assert json.loads(controlled.stdout) == [{NODE: {"pid": worker.pid}}]


@ON_SQLITE
def test_help_lists_the_commands_with_their_arguments(cli: RunCLI) -> None:
    inspect_help = cli("inspect", "--help")
    control_list = cli("control", "--list")

    assert inspect_help.returncode == 0, inspect_help.stderr
    listed = inspect_help.stdout.split("Inspect Commands:\n", 1)[1]
    assert "  query_task [id1 [id2 [... [idN]]]]" in listed
    assert "  sigproj_queue_count" in listed
    assert "rate_limit" not in listed
    assert control_list.stdout.startswith("Control Commands:\n")
    assert "  rate_limit <task_name> <rate>" in control_list.stdout
    assert "  sigproj_pid" in control_list.stdout


@ON_SQLITE
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "nosuch"), "Error: Command nosuch not recognized. Available inspect"),
        (("control", "ping"), "Error: Command ping not recognized. Available control"),
        (("control", "pool_grow", "many"), "Error: Command 'pool_grow': invalid n 'many'"),
        (("control", "rate_limit", "a", "1/s", "b"), "Error: Command 'rate_limit' takes"),
        (("inspect", "ping", "extra"), "Error: Command 'ping' takes no arguments"),
    ],
    ids=["unknown-inspect", "inspect-as-control", "bad-number", "too-many", "no-arguments"],
)
def test_wrong_commands_and_arguments_are_usage_errors(
    cli: RunCLI, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)

    assert result.returncode == 2
    assert message in result.stderr
