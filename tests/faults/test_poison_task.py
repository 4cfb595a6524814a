"""A task that kills its process ends in the dead-letter queue with a FAILURE, on every
broker, while a canary queue on the same worker keeps flowing at 90% of its rate or more.

Regression test for a poison task looping for ever on classic RabbitMQ queues (their
delivery count stops at 2) and for dead-lettered tasks that kept no result.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.exceptions import WorkerLostError
from celeriac.publisher import batch_publish
from celeriac.result import AsyncResult
from celeriac.states import FAILURE, SUCCESS
from celeriac.transports.base import dead_letter_queue
from celeriac.worker.settlement import redelivery_delay
from tests.faults.support import (
    BROKERS,
    battery_row,
    fault_broker,
    fault_client,
    faultproj_worker,
    run_times,
    wait_until_stored,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

SCENARIO = "poison task beside a canary queue"
MAX_DELIVERIES = 6
"""Its redeliveries wait 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s: a window of about 3 s to measure
the canary's rate in."""
CAPACITY_CANARIES = 1000
FLOW_SHARE = 0.3
"""The canary queue is fed at this share of the worker's capacity for canaries, so that
it flows as fast as it is fed unless the poison holds the worker back."""
FLOW_SECONDS = 6.0
"""How long the canaries flow without the poison; beside it they flow until it fails (on
RabbitMQ its redeliveries wait whole seconds, in the delay levels)."""
MIN_RATE_KEPT = 0.9


@pytest.mark.parametrize("kind", BROKERS)
def test_task_that_kills_its_process_is_dead_lettered_while_a_canary_queue_flows(
    kind: str, tmp_path: Path
) -> None:
    with (
        fault_broker(kind, tmp_path, max_deliveries=MAX_DELIVERIES) as broker,
        battery_row(SCENARIO, kind) as figures,
    ):
        client = fault_client(broker)
        extra = ("-P", "prefork", "-c", "2", "-Q", "celery,canary")
        with faultproj_worker(broker, tmp_path, *extra):
            backlog = send_canaries(client, CAPACITY_CANARIES)
            states = wait_until_stored(client, backlog, timeout=60)
            capacity = canary_rate(tmp_path, backlog)
            figures["canary capacity/s"] = capacity

            fed_at = time.time()
            alone = feed_canaries(client, capacity * FLOW_SHARE, FLOW_SECONDS)
            poisoned = client.send_task("faultproj.poison")
            # Until a little after the FAILURE, so the canaries outlast its last run.
            beside = feed_canaries(
                client, capacity * FLOW_SHARE, 60, until=lambda: poisoned.state == FAILURE
            )
            states += wait_until_stored(client, alone + beside, timeout=60)
            failure = wait_for_failure(poisoned, timeout=60)
            dead_letters = client.transport.queue_size(dead_letter_queue("celery"))
        client.close()

        times = run_times(tmp_path)
        started = times[poisoned.id]
        # Without the poison: the middle of its feed, away from the start and the end.
        rate_alone = canary_rate(tmp_path, alone, between=(fed_at + 1, fed_at + 5))
        rate_beside = canary_rate(tmp_path, beside, between=(started[0], started[-1]))
        figures["canaries/s alone"] = rate_alone
        figures["canaries/s beside the poison"] = rate_beside
        figures["kept"] = f"{rate_beside / rate_alone:.0%}"
        figures["poison runs"] = f"{len(started)} (max {MAX_DELIVERIES})"
        figures["poison window (s)"] = started[-1] - started[0]
        figures["dead letters"] = dead_letters
        gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
        assert set(states) == {SUCCESS}
        assert max(times[task_id][0] for task_id in beside) > started[-1]
        assert rate_beside >= MIN_RATE_KEPT * rate_alone
        assert len(started) == MAX_DELIVERIES
        assert all(gap >= redelivery_delay(count) for count, gap in enumerate(gaps, start=1))
        assert f"task_max_deliveries={MAX_DELIVERIES}" in str(failure.error)
        assert failure.waited < 1.0
        assert dead_letters == 1


def send_canaries(client: Celeriac, count: int) -> list[str]:
    """Send ``count`` quick tasks to the canary queue in one batch; return their ids."""
    with batch_publish(client):
        sent = [
            client.send_task("faultproj.record", (number,), queue="canary")
            for number in range(count)
        ]
    return [result.id for result in sent]


def feed_canaries(
    client: Celeriac,
    per_second: float,
    seconds: float,
    until: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Send canaries at ``per_second``, a small batch every 20 ms, for ``seconds`` or until
    ``until()`` holds (then half a second more); return their ids."""
    ids: list[str] = []
    started = time.monotonic()
    checked = 0.0
    while (elapsed := time.monotonic() - started) < seconds:
        if elapsed - checked > 0.25:
            checked = elapsed
            if until():
                seconds = min(seconds, elapsed + 0.5)
        due = round(per_second * elapsed) - len(ids)
        if due > 0:
            ids += send_canaries(client, due)
        time.sleep(0.02)
    return ids


def canary_rate(folder: Path, ids: list[str], between: tuple[float, float] | None = None) -> float:
    """Canary runs per second: over the whole run of ``ids``, or within ``between``."""
    times = run_times(folder)
    started = sorted(times[task_id][0] for task_id in ids)
    first, last = between or (started[0], started[-1])
    inside = [moment for moment in started if first <= moment <= last]
    return len(inside) / (last - first)


@dataclass(frozen=True)
class Failure:
    """How the poison task's FAILURE reached the client."""

    error: WorkerLostError
    waited: float  # seconds ``get`` took once the state was FAILURE


def wait_for_failure(result: AsyncResult[None], timeout: float) -> Failure:
    """Wait for the poison's FAILURE; return its error and how long ``get`` then took."""
    deadline = time.monotonic() + timeout
    while result.state != "FAILURE" and time.monotonic() < deadline:
        time.sleep(0.1)
    asked = time.monotonic()
    with pytest.raises(WorkerLostError) as raised:
        result.get(timeout=30)
    return Failure(raised.value, time.monotonic() - asked)
