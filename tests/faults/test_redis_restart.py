"""A Redis broker restarted under a busy acks_late worker: nothing lost, nothing run twice.

Regression test for acks that failed during an outage being dropped: the tasks stayed
pending under the live worker and ran again under the next one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from celeriac import Celeriac
from celeriac.states import SUCCESS
from tests.faults.support import FaultBroker, faultproj_worker, runs
from tests.servers import private_redis

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

TASKS = 5000
OUTAGE_SECONDS = 5.0


def pending_entries(url: str) -> int:
    """Entries delivered to a consumer and not acknowledged, over every celeriac stream."""
    with redis.Redis.from_url(url) as client:
        total = 0
        for key in client.scan_iter(match="*celeriac*:p[0-9]", _type="stream"):
            for group in client.xinfo_groups(key):
                total += int(group["pending"])
        return total


def test_broker_restarted_twice_under_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    with private_redis(tmp_path, appendonly=True) as server:
        broker = FaultBroker(server.url, server.url)
        client = Celeriac("client", broker=server.url, backend=server.url)
        ids = [client.send_task("faultproj.record", (number,)).id for number in range(TASKS)]
        with faultproj_worker(broker, tmp_path, "-P", "prefork", "-c", "2"):
            for threshold in (700, 2500):
                assert wait_until_runs(tmp_path, threshold, timeout=60)
                server.stop()
                time.sleep(OUTAGE_SECONDS)
                server.start()
            assert wait_until_runs(tmp_path, TASKS, timeout=120)
            states = wait_until_stored(client, ids, timeout=60)
            pending = wait_until_no_pending(server.url, timeout=30)
        client.close()

    counts = runs(tmp_path)
    lost = [task_id for task_id in ids if counts[task_id] == 0]
    twice = [task_id for task_id, count in counts.items() if count > 1]
    assert lost == []
    assert twice == []
    assert pending == 0
    assert set(states) == {SUCCESS}


def wait_until_runs(folder: Path, wanted: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(runs(folder)) >= wanted:
            return True
        time.sleep(0.05)
    return False


def wait_until_stored(client: Celeriac, ids: list[str], timeout: float) -> list[str]:
    """The stored state of each task, once every one is stored or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = client.backend.get_many(ids)
        if len(found) == len(ids) or time.monotonic() > deadline:
            return [found[task_id]["status"] if task_id in found else "PENDING" for task_id in ids]
        time.sleep(0.2)


def wait_until_no_pending(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (pending := pending_entries(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pending
