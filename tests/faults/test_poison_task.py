"""A task that kills its process ends in the dead-letter queue with a FAILURE, on every broker.

Regression test for a poison task looping for ever on classic RabbitMQ queues (their
delivery count stops at 2) and for dead-lettered tasks that kept no result.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.exceptions import WorkerLostError
from celeriac.transports.base import dead_letter_queue
from celeriac.worker.settlement import redelivery_delay
from tests.faults.support import FaultBroker, faultproj_worker, run_times
from tests.servers import delete_redis_keys, rabbitmq_vhost, require

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

MAX_DELIVERIES = 4
CANARIES = 200


@pytest.fixture(params=["sqlite", "redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultBroker]:
    if request.param == "sqlite":
        yield FaultBroker(f"sqlite:///{tmp_path}/broker.db", max_deliveries=MAX_DELIVERIES)
        return
    redis_url = require("redis")
    prefix = f"faults-{uuid.uuid4().hex}:"
    backend = f"{redis_url}?global_keyprefix={prefix}"
    if request.param == "rabbitmq":
        with rabbitmq_vhost("faults") as url:
            yield FaultBroker(url, backend, max_deliveries=MAX_DELIVERIES)
    else:
        options = {"global_keyprefix": prefix}
        yield FaultBroker(redis_url, backend, options, max_deliveries=MAX_DELIVERIES)
    delete_redis_keys(redis_url, prefix)


def test_task_that_kills_its_process_runs_at_most_max_deliveries_then_dead_letters(
    broker: FaultBroker, tmp_path: Path
) -> None:
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    client.conf.broker_transport_options = broker.options
    poisoned = client.send_task("faultproj.poison")
    canaries = [client.send_task("faultproj.record", (number,)) for number in range(CANARIES)]

    with faultproj_worker(broker, tmp_path, "-P", "prefork", "-c", "2"):
        canary_values = [result.get(timeout=60) for result in canaries]
        deadline = time.monotonic() + 60
        while poisoned.state != "FAILURE" and time.monotonic() < deadline:
            time.sleep(0.1)
        asked = time.monotonic()
        with pytest.raises(WorkerLostError) as raised:
            poisoned.get(timeout=30)
        waited = time.monotonic() - asked
        dead_letters = client.transport.queue_size(dead_letter_queue("celery"))
    client.close()

    started = run_times(tmp_path)[poisoned.id]
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert canary_values == list(range(CANARIES))
    assert len(started) == MAX_DELIVERIES
    assert all(gap >= redelivery_delay(count) for count, gap in enumerate(gaps, start=1))
    assert "task_max_deliveries=4" in str(raised.value)
    assert waited < 1.0
    assert dead_letters == 1
