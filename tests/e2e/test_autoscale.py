"""``celeriac worker --autoscale MAX,MIN`` on a real worker: the pool grows to the work it
holds, shrinks back once idle for the keepalive, and the control commands move its bounds."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac import Celeriac
from tests.e2e.conftest import WorkerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("broker", ["sqlite"], indirect=True)]
StartWorker = Callable[..., WorkerProcess]
NODE = "w0@e2e"
KEEPALIVE = 2.0


def autoscaler(client: Celeriac) -> dict[str, Any]:
    """The node's ``stats()["autoscaler"]`` (one destination: Celery returns its reply alone)."""
    stats = client.control.inspect(destination=NODE, timeout=2.0, limit=1).stats() or {}
    info: dict[str, Any] = stats.get("autoscaler", {})
    return info


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_the_pool_grows_to_the_work_and_shrinks_back_when_idle(
    start_worker: StartWorker, client: Celeriac, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSCALE_KEEPALIVE", str(KEEPALIVE))
    worker = start_worker("--autoscale", "4,1", pool=pool, concurrency=1)
    assert autoscaler(client) == {"max": 4, "min": 1, "current": 1, "qty": 0}

    began = time.monotonic()
    results = [client.send_task("sigproj.slow", (2.0,)) for _ in range(4)]
    assert [result.get(timeout=20) for result in results] == [2.0] * 4
    took = time.monotonic() - began

    assert took < 6.0, "four 2 s tasks on one slot would take 8 s"
    assert "Scaling up" in worker.log()
    assert wait_for(lambda: autoscaler(client).get("current") == 1, timeout=KEEPALIVE + 10)
    assert "Scaling down 1 processes." in worker.log()


def test_control_commands_move_the_bounds(start_worker: StartWorker, client: Celeriac) -> None:
    start_worker("--autoscale", "3,1", pool="threads", concurrency=1)
    control = client.control

    def ask(command: str, **arguments: object) -> object:
        return control.broadcast(command, arguments=arguments, reply=True, timeout=2.0)

    assert ask("autoscale", max=5, min=2) == [{NODE: {"ok": "autoscale now max=5 min=2"}}]
    assert autoscaler(client) == {"max": 5, "min": 2, "current": 2, "qty": 0}
    assert ask("pool_grow", n=4) == [{NODE: {"ok": "pool will grow"}}]
    assert autoscaler(client) == {"max": 6, "min": 2, "current": 6, "qty": 0}
    assert ask("pool_shrink", n=5) == [{NODE: {"ok": "pool will shrink"}}]
    assert autoscaler(client) == {"max": 6, "min": 1, "current": 1, "qty": 0}
    assert ask("autoscale", max=1, min=2) == [
        {NODE: {"error": "ValueError('autoscale needs 1 <= min <= max, not max=1 min=2')"}}
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--autoscale", "ten"], "--autoscale takes MAX or MAX,MIN, such as 10,3; not 'ten'"),
        (["--autoscale", "2,5"], "--autoscale needs 1 <= MAX and 0 <= MIN <= MAX; not '2,5'"),
        (["--autoscale", "4,1", "-P", "solo"], "--autoscale needs a pool that can resize"),
    ],
)
def test_a_bad_autoscale_is_refused_with_a_clear_error(
    arguments: list[str], message: str, broker: Any
) -> None:
    command = [sys.executable, "-m", "celeriac", "-b", broker.url, "worker", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)

    assert done.returncode != 0
    assert message in done.stderr
