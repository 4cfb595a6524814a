"""The gevent pool: many jobs at once in one process, limits, terminate, stops, signals.

The pool runs only in a process that gevent patched at its start, so the scenarios run
in such a child (``green_pool_scenarios.py``), all in one, and each test reads what its
scenario saw. The refusal to run unpatched is checked here, in the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from celeriac.__main__ import maybe_patch_concurrency, pool_option
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.pools import create_pool
from tests.worker.green_pool_scenarios import PATCH
from tests.worker.support import sleep_target

ROOT = Path(__file__).parents[2]
SIGNAL_ORDER = [
    "eventlet_pool_started",
    "eventlet_pool_apply",
    "eventlet_pool_preshutdown",
    "eventlet_pool_postshutdown",
]


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    """What every scenario saw, from one patched child process."""
    program = f"{PATCH}\nfrom tests.worker.green_pool_scenarios import main\nmain()"
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


def test_a_hundred_sleeping_jobs_run_at_once_in_one_process(seen):
    scenario = seen["many_jobs_at_once"]

    assert scenario["states"] == ["SUCCESS"]
    assert scenario["task_ids"] == 100
    assert scenario["elapsed"] < 2.0


def test_the_green_pool_signals_come_in_order_with_the_pool_as_sender(seen):
    scenario = seen["many_jobs_at_once"]

    assert scenario["signals"] == [SIGNAL_ORDER[0], *[SIGNAL_ORDER[1]] * 100, *SIGNAL_ORDER[2:]]
    assert scenario["senders"] == ["GeventPool"]
    assert scenario["apply"] == {
        "signal": "eventlet_pool_apply",
        "sender": "GeventPool",
        "kwargs": ["args", "kwargs", "target"],
        "target": "sleep_target",
        "args": ["Job"],
        "kwargs_value": {},
    }


def test_the_green_pool_implements_the_pool_protocol_and_describes_itself(seen):
    scenario = seen["many_jobs_at_once"]

    assert scenario["is_pool"] is True
    info = scenario["info"]
    assert info["implementation"] == "celeriac.worker.pools.gevent:GeventPool"
    assert info["max-concurrency"] == 100
    assert info["running-threads"] == 0
    assert info["free-threads"] == 100


def test_jobs_beyond_the_limit_wait_and_the_pool_can_be_resized(seen):
    scenario = seen["backlog_and_resizing"]

    assert 0.55 < scenario["elapsed"] < 1.5
    assert (scenario["grown"], scenario["shrunk"]) == (4, 1)
    assert scenario["refused"] is True


def test_soft_time_limit_is_raised_in_the_task(seen):
    scenario = seen["time_limits"]

    assert scenario["soft"]["info"] == {"soft_time_limit_seen": True}
    assert scenario["soft_elapsed"] < 1.5


def test_hard_time_limit_cuts_the_job_short_and_reports_it_lost(seen):
    scenario = seen["time_limits"]

    assert scenario["hard"] == {
        "task_id": "hard",
        "state": "FAILURE",
        "lost": True,
        "requeue": False,
        "exception": "TimeLimitExceeded",
        "info": {},
    }
    assert scenario["hard_elapsed"] < 1.5


def test_terminate_job_reports_the_job_revoked_with_the_signal(seen):
    scenario = seen["terminating_a_job"]

    assert (scenario["found"], scenario["missing"]) == (True, False)
    assert scenario["outcome"] == {
        "task_id": "doomed",
        "state": "REVOKED",
        "lost": True,
        "requeue": False,
        "exception": "TaskRevokedError",
        "info": {"signum": 15},
    }


def test_cold_stop_cuts_running_jobs_short_and_gives_waiting_ones_back(seen):
    scenario = seen["cold_stop"]

    assert scenario["stopped_in"] < 1.5
    running, waiting = scenario["outcomes"]["running"], scenario["outcomes"]["waiting"]
    assert (running["state"], running["lost"], running["exception"]) == (
        "FAILURE",
        True,
        "WorkerLostError",
    )
    assert (waiting["state"], waiting["requeue"]) == ("REJECTED", True)
    assert (scenario["late"]["state"], scenario["late"]["requeue"]) == ("REJECTED", True)
    assert scenario["signals"][-2:] == SIGNAL_ORDER[2:]


def test_graceful_stop_waits_for_the_running_job(seen):
    scenario = seen["graceful_stop"]

    assert scenario["waited"] >= 0.45
    assert scenario["outcome"]["state"] == "SUCCESS"
    assert scenario["signals"] == SIGNAL_ORDER


def test_the_green_pool_refuses_a_process_that_was_not_patched():
    with pytest.raises(ImproperlyConfigured, match="-P gevent"):
        create_pool("gevent", sleep_target, 10)


@pytest.mark.parametrize(
    ("argv", "pool"),
    [
        (["-A", "proj", "worker", "-P", "gevent", "-c", "500"], "gevent"),
        (["-A", "proj", "worker", "--pool=GEVENT"], "gevent"),
        (["-A", "proj", "worker", "--pool", "threads"], "threads"),
        (["-A", "proj", "worker", "-Pgevent"], "gevent"),
        (["-A", "proj", "worker"], None),
        (["-A", "proj", "call", "proj.add", "-P", "gevent"], None),
        (["-A", "proj", "worker", "--", "-P", "gevent"], None),
    ],
)
def test_the_entry_point_finds_the_pool_the_worker_command_is_given(argv, pool):
    assert pool_option(argv) == pool


@pytest.mark.parametrize(("pool", "patched"), [("gevent", True), ("threads", False)])
def test_the_entry_point_patches_only_for_a_green_pool(pool, patched):
    program = (
        "import sys\n"
        "from celeriac.__main__ import maybe_patch_concurrency\n"
        "maybe_patch_concurrency(sys.argv[1:])\n"
        "from gevent import monkey\n"
        "print(monkey.is_module_patched('socket'), monkey.is_module_patched('threading'))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program, "-A", "proj", "worker", "-P", pool],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert completed.stdout.split() == [str(patched), str(patched)]


def test_the_entry_point_leaves_a_process_alone_without_a_worker_command():
    maybe_patch_concurrency(["-A", "proj", "purge", "-f"])

    from gevent import monkey

    assert not monkey.is_module_patched("socket")
