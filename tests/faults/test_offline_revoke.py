"""A revoke sent while no worker runs is honoured by the worker started afterwards.

100 tasks wait in the broker, 20 of them are revoked with no worker listening (the
broadcast reaches nobody; the record in the broker is what counts), then a worker starts:
the 80 others run once each, the 20 never run and are REVOKED. On every broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac, states
from tests.faults.battery import record_row
from tests.faults.support import FaultBroker, faultproj_worker, runs
from tests.servers import delete_redis_keys, rabbitmq_vhost, require

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

SCENARIO = "revoke sent while no worker runs"
TASKS = 100
REVOKED = 20


@pytest.fixture(params=["sqlite", "redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultBroker]:
    if request.param == "sqlite":
        yield FaultBroker(f"sqlite:///{tmp_path}/broker.db", f"sqlite:///{tmp_path}/results.db")
        return
    redis_url = require("redis")
    prefix = f"faults-{uuid.uuid4().hex}:"
    backend = f"{redis_url}?global_keyprefix={prefix}"
    if request.param == "rabbitmq":
        with rabbitmq_vhost("faults") as url:
            yield FaultBroker(url, backend)
    else:
        yield FaultBroker(redis_url, backend, {"global_keyprefix": prefix})
    delete_redis_keys(redis_url, prefix)


def test_revoke_sent_while_no_worker_runs_is_honoured(
    broker: FaultBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.params["broker"]
    client = Celeriac("client", broker=broker.url, backend=broker.backend)
    client.conf.broker_transport_options = broker.options
    results = [client.send_task("faultproj.record", (number,)) for number in range(TASKS)]
    revoked, kept = results[::5], [r for index, r in enumerate(results) if index % 5]
    client.control.revoke([result.id for result in revoked])

    started = time.monotonic()
    with faultproj_worker(broker, tmp_path, "-P", "prefork", "-c", "2"):
        values = [result.get(timeout=60) for result in kept]
        drained = time.monotonic() - started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            result.state != states.REVOKED for result in revoked
        ):
            time.sleep(0.1)
        revoked_states = [result.state for result in revoked]
    client.close()

    ran = runs(tmp_path)
    ran_kept = sum(1 for result in kept if ran[result.id] == 1)
    ran_revoked = sum(1 for result in revoked if ran[result.id])
    stored_revoked = revoked_states.count(states.REVOKED)
    figures = (
        f"{ran_kept}/{len(kept)} others ran once, {ran_revoked}/{len(revoked)} revoked ran,"
        f" {stored_revoked}/{len(revoked)} REVOKED;"
        f" {drained:.1f} s from worker start to the others done"
    )
    is_good = (
        ran_kept == len(kept) == TASKS - REVOKED and ran_revoked == 0 and stored_revoked == REVOKED
    )
    record_row(SCENARIO, name, "ok" if is_good else "FAILED", figures)
    assert values == [number for number in range(TASKS) if number % 5]
    assert ran_kept == TASKS - REVOKED
    assert ran_revoked == 0
    assert revoked_states == [states.REVOKED] * REVOKED
